"""The Enrich model in one file: a TinyViT backbone, attribute heads, and a GPT-2 caption decoder.

    pixels -> TinyViT.forward_features -> (B, C, h, w) feature map     (one backbone pass per image)
       |      |-> pool + norm -> pooled (B, C) -> one linear head per attribute -> logits / temperature
       |      `-> flatten -> tokens (B, h*w, C) -> GPT-2 with cross-attention -> caption
       `-> foreground colour features (colour.py) ^ (concatenated for the baseColour head)

The captioner is a `VisionEncoderDecoderModel` whose encoder is the same TinyViT (wrapped as a
`PreTrainedModel`), so the heads and the decoder share one set of backbone weights and one pass.
The graphs every backend runs are built from these modules in `graphs.py`; `encoding.encode()` is the one
place a backbone pass and the colour features of the same pixels come together.

This file is also copied beside the saved captioner weights (trust_remote_code loading without enrich):
it imports only torch, timm and transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


# exist_ok: this file is also copied beside saved weights for trust_remote_code loading, and may be
# imported a second time under that name in the same process.
AutoConfig.register(TinyVitEncoderConfig.model_type, TinyVitEncoderConfig, exist_ok=True)
AutoModel.register(TinyVitEncoderConfig, TinyVitEncoder, exist_ok=True)


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
    encoder: TinyVitEncoder, decoder: GPT2LMHeadModel, bos_id: int, eos_id: int, pad_id: int, max_new_tokens: int,
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
    """One linear classifier per attribute over the shared pooled features (plus colour features where
    they help), and one temperature per attribute, fitted after training, that calibrates confidences.

    Features are standardised first (batch statistics, frozen at inference): a backbone without
    pretrained weights gives features whose spread across images is tiny, which stalls the heads.
    """

    def __init__(self, in_features: int, num_classes: dict[str, int], dropout: float = 0.1,
                 colour_features: int = 0, colour_attributes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.names = list(num_classes)
        self.colour_attributes = tuple(a for a in colour_attributes if a in num_classes) if colour_features else ()
        self.norm = nn.BatchNorm1d(in_features)
        self.colour_norm = nn.BatchNorm1d(colour_features) if self.colour_attributes else None
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({
            name: nn.Linear(in_features + (colour_features if name in self.colour_attributes else 0), n)
            for name, n in num_classes.items()
        })
        self.register_buffer("temperature", torch.ones(len(self.names)))

    def forward(self, pooled: torch.Tensor, colour: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Raw logits per attribute (divide by `temperature` for calibrated probabilities)."""
        inputs = self.head_inputs(pooled, colour)
        return {name: head(inputs[name]) for name, head in self.heads.items()}

    def head_inputs(self, pooled: torch.Tensor, colour: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """What each linear head reads: the standardised pooled features, with the colour features after
        them for the colour attributes."""
        pooled = self.dropout(_standardise(self.norm, pooled))
        with_colour = pooled
        if self.colour_norm is not None:
            if colour is None:
                raise ValueError(f"heads {self.colour_attributes} need colour features")
            with_colour = torch.cat([pooled, self.dropout(_standardise(self.colour_norm, colour))], dim=1)
        return {name: with_colour if name in self.colour_attributes else pooled for name in self.names}


def _standardise(norm: nn.BatchNorm1d, features: torch.Tensor) -> torch.Tensor:
    """BatchNorm, except for a training batch of one (the last of an epoch, or one process's share), which
    has no spread to measure: it is standardised with the running statistics instead."""
    if norm.training and features.shape[0] == 1:
        return nn.functional.batch_norm(features, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                        training=False, eps=norm.eps)
    return norm(features)


# --- the whole model ---------------------------------------------------------------------------------
class EnrichModel(nn.Module):
    """Backbone + colour features (`colour.ColourFeatures`, not learnt) + heads + captioner, as a bundle holds
    them; `captioner.encoder` is the one backbone. Inference runs it through a backend (`backends.py`: torch,
    or its OpenVINO export) and the stages in `pipeline.py`; training wraps the parts it trains instead
    (`enrich_trainer.classifier.AttributeClassifier`, the captioner alone)."""

    def __init__(self, captioner: VisionEncoderDecoderModel, heads: AttributeHeads,
                 colour: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.captioner = captioner
        self.heads = heads
        self.colour = colour

    @property
    def encoder(self) -> TinyVitEncoder:
        return self.captioner.encoder
