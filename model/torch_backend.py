"""The model's graphs (`graphs.py`) run eagerly on PyTorch: the reference every other backend is compared with,
GPUs, and training's evaluation. Autocast (bf16/fp16) applies to the backbone only; torch.compile on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from .backends import Backend, BackendChoice, Precision
from .bundle import Bundle, load_bundle
from .caption_vocabulary import CaptionVocabulary
from .encoding import Encoded, encode
from .graphs import CaptionStep, ModelGraphs
from .search import DecoderRun


class TorchBackend(Backend):
    """channels_last memory layout (faster convolutions on CPU), autocast for bf16/fp16.

    `compile=True` runs the backbone through torch.compile (dynamic batch size, so one compilation serves
    every batch): worth it on GPUs, where it fuses the many small kernels; the first batch then takes
    minutes, which the server's warm-up absorbs before it reports SERVING. `channels_last=False` keeps the
    layout training uses (the benchmark's reference)."""

    def __init__(self, bundle: Bundle, precision: Precision = Precision.FP32, compile: bool = False,
                 channels_last: bool = True) -> None:
        self.bundle = bundle
        model = bundle.model.eval()
        self.choice = BackendChoice("torch", precision)
        self.torch_device = next(model.parameters()).device
        self.device = str(self.torch_device)
        self.graphs = ModelGraphs(model, CaptionVocabulary.ids_of(bundle.config)).eval()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.encoder.to(memory_format=self.memory_format)
        self.dtype = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(precision)
        self.features = torch.compile(self.graphs.encoder, dynamic=True) if compile else self.graphs.encoder
        self.colour = model.colour
        heads = model.heads
        self.temperatures = dict(zip(heads.names, heads.temperature.tolist(), strict=True))
        self.candidates = self.graphs.candidates

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
        encoded = encode(self.backbone, self.colour, pixels)
        colour = None if encoded.colour is None else encoded.colour.float().cpu().numpy()
        return Encoded(encoded.pooled.cpu().numpy(), encoded.tokens, colour)

    @torch.inference_mode()
    def logits(self, encoded: Encoded) -> dict[str, np.ndarray]:
        colour = None if encoded.colour is None else torch.from_numpy(encoded.colour).to(self.torch_device)
        logits = self.graphs.heads(torch.from_numpy(encoded.pooled).to(self.torch_device), colour)
        return {name: value.float().cpu().numpy() for name, value in zip(self.graphs.heads.names, logits, strict=True)}

    @torch.inference_mode()
    def start_captions(self, tokens: list[torch.Tensor]) -> DecoderRun:
        cross = self.graphs.caption_cross(torch.stack(tokens).to(self.torch_device).float())
        return TorchRun(self.graphs.caption_step, *cross)


class TorchRun(DecoderRun):
    def __init__(self, step: CaptionStep, cross_keys: torch.Tensor, cross_values: torch.Tensor) -> None:
        super().__init__(cross_keys, cross_values)
        self.caption_step = step

    def take(self, cache: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return cache.index_select(1, torch.as_tensor(rows, device=cache.device))

    @torch.inference_mode()
    def advance(self, tokens: np.ndarray, position: int) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        device = self.keys.device
        log_probs, chosen, keys, values = self.caption_step(
            torch.from_numpy(tokens).to(device), torch.full((1, 1), position, device=device), self.keys, self.values,
            self.cross_keys, self.cross_values)
        return log_probs.cpu().numpy(), chosen.cpu().numpy(), keys, values
