"""The Enrich model in one file: a TinyViT backbone, attribute heads, and a GPT-2 caption decoder.

    pixels -> TinyViT.forward_features -> (B, C, h, w) feature map     (one backbone pass per image)
              |-> pool + norm -> pooled (B, C) -> one linear head per attribute -> logits
              `-> flatten -> tokens (B, h*w, C) -> GPT-2 with cross-attention -> caption

The captioner is a `VisionEncoderDecoderModel` whose encoder is the same TinyViT (wrapped as a
`PreTrainedModel`), so the heads and the decoder share one set of backbone weights and one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import timm
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PretrainedConfig,
    PreTrainedModel,
    VisionEncoderDecoderModel,
)
from transformers.modeling_outputs import BaseModelOutput


# --- encoder -----------------------------------------------------------------------------------------
class TinyVitEncoderConfig(PretrainedConfig):
    model_type = "enrich_tinyvit"

    def __init__(
        self,
        backbone: str = "tiny_vit_5m_224",
        backbone_kwargs: dict | None = None,
        image_size: list[int] | None = None,
        hidden_size: int = 320,
        **kwargs,
    ) -> None:
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.image_size = list(image_size or [224, 224])
        self.hidden_size = hidden_size  # read by VisionEncoderDecoderModel to size enc_to_dec_proj
        super().__init__(**kwargs)


class TinyVitEncoder(PreTrainedModel):
    """A timm TinyViT that returns its final feature map as a token sequence (B, h*w, C)."""

    config_class = TinyVitEncoderConfig
    main_input_name = "pixel_values"
    base_model_prefix = "encoder"

    def __init__(self, config: TinyVitEncoderConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config)
        self.backbone = backbone or timm.create_model(
            config.backbone, pretrained=False, num_classes=0, **config.backbone_kwargs
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # timm initialises its own weights; only TinyViT's non-persistent attention index buffers need
        # rebuilding, because they are not saved and from_pretrained builds the model on the meta device.
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()

    def features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass -> (pooled (B, C) for the heads, tokens (B, h*w, C) for the decoder)."""
        feature_map = self.backbone.forward_features(pixel_values)
        pooled = self.backbone.forward_head(feature_map, pre_logits=True)
        tokens = feature_map.flatten(2).transpose(1, 2).contiguous()
        return pooled, tokens

    def forward(self, pixel_values: torch.Tensor, **_: object) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.features(pixel_values)[1])


AutoConfig.register(TinyVitEncoderConfig.model_type, TinyVitEncoderConfig)
AutoModel.register(TinyVitEncoderConfig, TinyVitEncoder)


def build_encoder(
    backbone: str, backbone_kwargs: dict | None = None, image_size: tuple[int, int] | None = None,
    pretrained: str = "none",
) -> TinyVitEncoder:
    """A fresh encoder. `pretrained`: "none", "hub" (timm weights from the hub), or a local weights file."""
    kwargs = dict(backbone_kwargs or {})
    if pretrained == "none":
        network = timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs)
    elif pretrained == "hub":
        network = timm.create_model(backbone, pretrained=True, num_classes=0, **kwargs)
    else:
        network = timm.create_model(
            backbone, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": pretrained}, **kwargs
        )
    size = list(image_size or network.pretrained_cfg.get("input_size", (3, 224, 224))[1:])
    config = TinyVitEncoderConfig(backbone, kwargs, size, hidden_size=network.num_features)
    return TinyVitEncoder(config, backbone=network)


# --- decoder -----------------------------------------------------------------------------------------
@dataclass
class DecoderSpec:
    """A small GPT-2 for when no pretrained decoder can be had (offline, tests, demos)."""

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 64


def build_small_decoder(vocab_size: int, bos_id: int, eos_id: int, spec: DecoderSpec) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=spec.n_positions, n_embd=spec.n_embd, n_layer=spec.n_layer,
        n_head=spec.n_head, bos_token_id=bos_id, eos_token_id=eos_id, add_cross_attention=True,
        is_decoder=True,
    )
    return GPT2LMHeadModel(config)


def build_captioner(
    encoder: TinyVitEncoder, decoder: GPT2LMHeadModel, bos_id: int, eos_id: int, pad_id: int,
    max_new_tokens: int = 32,
) -> VisionEncoderDecoderModel:
    decoder.config.pad_token_id = pad_id
    captioner = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    captioner.config.decoder_start_token_id = bos_id
    captioner.config.pad_token_id = pad_id
    captioner.config.eos_token_id = eos_id
    captioner.generation_config = GenerationConfig(
        decoder_start_token_id=bos_id, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
        max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
    )
    return captioner


# --- heads -------------------------------------------------------------------------------------------
class AttributeHeads(nn.Module):
    """One linear classifier per attribute over the shared pooled features.

    The features are standardised first (batch statistics, frozen at inference): a backbone without
    pretrained weights gives features whose spread across images is tiny, which stalls the heads.
    """

    def __init__(self, in_features: int, num_classes: dict[str, int], dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_features)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(in_features, n) for name, n in num_classes.items()})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.dropout(self.norm(pooled))
        return {name: head(pooled) for name, head in self.heads.items()}


def attribute_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of per-attribute cross-entropies; -100 marks a missing label and is skipped."""
    total = torch.zeros((), device=next(iter(logits.values())).device)
    for name, target in labels.items():
        if (target != -100).any():
            total = total + nn.functional.cross_entropy(logits[name], target, ignore_index=-100)
    return total


# --- the whole model ---------------------------------------------------------------------------------
@dataclass
class Captions:
    texts: list[str]
    confidences: list[float]  # geometric mean of the chosen tokens' probabilities
    token_counts: list[int] = field(default_factory=list)


class EnrichModel(nn.Module):
    """Backbone + heads + captioner for inference; `captioner.encoder` is the one backbone.

    Training wraps the parts it trains instead (see enrich_trainer.train.HeadsObjective)."""

    def __init__(self, captioner: VisionEncoderDecoderModel, heads: AttributeHeads) -> None:
        super().__init__()
        self.captioner = captioner
        self.heads = heads

    @property
    def encoder(self) -> TinyVitEncoder:
        return self.captioner.encoder

    @torch.inference_mode()
    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.features(pixel_values)

    @torch.inference_mode()
    def classify(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled features -> class probabilities per attribute."""
        return {name: logits.softmax(-1) for name, logits in self.heads(pooled).items()}

    @torch.inference_mode()
    def caption(self, tokens: torch.Tensor, tokenizer, num_beams: int = 1,
                max_new_tokens: int | None = None) -> Captions:
        """Encoder tokens -> captions, reusing the backbone pass (no second encoder run)."""
        generated = self.captioner.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=tokens),
            # generate() extends this mask step by step; without it GPT-2 warns about padding.
            decoder_attention_mask=torch.ones(len(tokens), 1, dtype=torch.long, device=tokens.device),
            num_beams=num_beams,
            max_new_tokens=max_new_tokens or self.captioner.generation_config.max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        sequences = generated.sequences
        scores = self.captioner.compute_transition_scores(
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
