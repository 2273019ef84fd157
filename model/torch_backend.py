"""The model on PyTorch: eager (the reference every other backend is compared with), autocast for bf16/fp16,
torch.compile on request; GPUs and training use it. Captions come from transformers' `generate`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import logging as hf_logging

from .backends import Backend, BackendChoice, Precision
from .bundle import Bundle, load_bundle
from .encoding import Encoded, encode
from .search import Captions


class TorchBackend(Backend):
    """channels_last memory layout (faster convolutions on CPU), autocast for bf16/fp16.

    `compile=True` runs the backbone through torch.compile (dynamic batch size, so one compilation serves
    every batch): worth it on GPUs, where it fuses the many small kernels; the first batch then takes
    minutes, which the server's warm-up absorbs before it reports SERVING. `channels_last=False` keeps the
    layout training uses (the benchmark's reference)."""

    def __init__(self, bundle: Bundle, precision: Precision = Precision.FP32, compile: bool = False,
                 channels_last: bool = True) -> None:
        self.bundle = bundle
        self.model = bundle.model.eval()
        encoder = self.model.encoder
        self.choice = BackendChoice("torch", precision)
        self.torch_device = next(encoder.parameters()).device
        self.device = str(self.torch_device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        encoder.to(memory_format=self.memory_format)
        self.dtype = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(precision)
        self.features = torch.compile(encoder.features, dynamic=True) if compile else encoder.features
        heads = self.model.heads
        self.temperatures = dict(zip(heads.names, heads.temperature.tolist(), strict=True))

    @classmethod
    def load(cls, path: Path, device: str, choice: BackendChoice, compile: bool = False, config=None) -> TorchBackend:
        hf_logging.disable_progress_bar()  # one "Loading weights" bar per start says nothing in a server log
        return cls(load_bundle(path, device=device, config=config), choice.precision, compile)

    def backbone(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.torch_device.type, dtype=self.dtype, enabled=self.dtype is not None):
            pooled, tokens = self.features(pixels.contiguous(memory_format=self.memory_format))
        return pooled.float(), tokens.float()

    @torch.inference_mode()
    def encode(self, pixels: np.ndarray | torch.Tensor) -> Encoded:
        pixels = torch.as_tensor(pixels).to(self.torch_device, non_blocking=True)
        encoded = encode(self.backbone, self.model.colour, pixels)
        colour = None if encoded.colour is None else encoded.colour.float().cpu().numpy()
        return Encoded(encoded.pooled.cpu().numpy(), encoded.tokens, colour)

    @torch.inference_mode()
    def logits(self, encoded: Encoded) -> dict[str, np.ndarray]:
        colour = None if encoded.colour is None else torch.from_numpy(encoded.colour).to(self.torch_device)
        logits = self.model.heads(torch.from_numpy(encoded.pooled).to(self.torch_device), colour)
        return {name: value.float().cpu().numpy() for name, value in logits.items()}

    @torch.inference_mode()
    def caption(self, tokens: list[torch.Tensor], num_beams: int = 1, max_new_tokens: int | None = None) -> Captions:
        """Encoder tokens -> captions through `generate`, reusing the backbone pass (no second encoder run)."""
        captioner, tokenizer = self.model.captioner, self.bundle.tokenizer
        stacked = torch.stack(tokens).to(self.torch_device)
        generated = captioner.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=stacked),
            # generate() extends this mask step by step; without it GPT-2 warns about padding.
            decoder_attention_mask=torch.ones(len(stacked), 1, dtype=torch.long, device=stacked.device),
            num_beams=num_beams,
            max_new_tokens=max_new_tokens or captioner.generation_config.max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        sequences = generated.sequences
        scores = captioner.compute_transition_scores(
            sequences, generated.scores, getattr(generated, "beam_indices", None), normalize_logits=True
        )
        special = set(tokenizer.all_special_ids)
        texts, confidences, counts = [], [], []
        for row, row_scores in zip(sequences[:, 1:], scores, strict=True):
            keep = [i for i, token in enumerate(row.tolist()) if token not in special]
            chosen = row_scores[: len(row)][[*keep]] if keep else row_scores[:0]
            finite = chosen[torch.isfinite(chosen)]
            confidences.append(math.exp(float(finite.mean())) if len(finite) else 0.0)
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
            counts.append(len(keep))
        return Captions(texts, confidences, counts)
