"""The Enrich model in one file: a TinyViT backbone, attribute heads, and a GPT-2 caption decoder.

    pixels -> TinyViT.forward_features -> (B, C, h, w) feature map     (one backbone pass per image)
       |      |-> pool + norm -> pooled (B, C) -> one linear head per attribute -> logits / temperature
       |      `-> flatten -> tokens (B, h*w, C) -> GPT-2 with cross-attention -> caption
       `-> foreground colour features ----------^ (concatenated for the baseColour head)

The captioner is a `VisionEncoderDecoderModel` whose encoder is the same TinyViT (wrapped as a
`PreTrainedModel`), so the heads and the decoder share one set of backbone weights and one pass.
`encode()` is the one place a backbone pass and the colour features of the same pixels come together:
the trainer calls it with the eager backbone, serving through an encoder backend (`backends.py`).

This file is also copied beside the saved captioner weights (trust_remote_code loading without enrich):
it imports only torch, timm and transformers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


# --- colour features -------------------------------------------------------------------------------
class ColourFeatures(nn.Module):
    """Colour features of the product's pixels, white-balanced against the image's own background: a coarse
    joint histogram of the foreground (how its colours are spread) and its dominant colour at fine resolution.

    baseColour is a property of pixels, not of shapes: a backbone trained on a few thousand images learns
    silhouettes long before it learns fine colour distinctions (Navy Blue vs Black), while the product's own
    pixels separate them directly. Studio shots sit on a near-white background, so the border tells the
    light's colour and level; pixels that differ from it are the product. The histogram's bins are too wide
    for neighbouring names (Beige and Nude sit 10 levels apart), hence the dominant colour as well.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], bins: int = 8, levels: int = 16,
                 resolution: int = 32, detail_resolution: int = 80) -> None:
        super().__init__()
        self.bins, self.levels, self.resolution, self.detail_resolution = bins, levels, resolution, detail_resolution
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_features(self) -> int:
        histogram = self.bins ** 3 + 4  # joint histogram, foreground share, mean foreground colour
        return histogram + (3 * self.levels + 4 if self.levels else 0)  # + dominant colour, encoded and raw; share

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # fp32 always: mixed-precision training would run the light fit's matmuls in half precision and
        # hand linalg.solve mismatched dtypes; the features are cheap either way.
        with torch.autocast(pixel_values.device.type, enabled=False):
            rgb = (pixel_values.float() * self.std + self.mean).clamp(0, 1)
            small = nn.functional.adaptive_avg_pool2d(rgb, self.resolution)  # averages noise for the histogram
            light = self.background_light(small)  # (B, 3, h, w): the light falling on each pixel
            features = [self.histogram(small, light)]
            if self.levels:
                features.append(self.dominant_colour(rgb, light))
            return torch.cat(features, dim=1)

    def histogram(self, rgb: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        distance = self.distance_from_light(rgb, light)
        foreground = ((distance - 0.1) / 0.1).clamp(0, 1).flatten(1)  # soft mask, (B, N)
        balanced = (rgb / light).clamp(0, 1).flatten(2)  # (B, 3, N): the product's colour under white light
        centres = torch.linspace(0, 1, self.bins, device=rgb.device)
        # Triangular (linear) bin weights: a colour between two bins counts for both, so small shifts of
        # light move mass smoothly instead of flipping bins.
        weights = (1 - (balanced[..., None, :] - centres[:, None]).abs() * (self.bins - 1)).clamp(min=0)
        # The joint (r, g, b) histogram as one batched matmul: (r x g) pairs against foreground-weighted b
        # (a four-factor torch.einsum is far slower on CPU).
        batch, pixels = foreground.shape
        red_green = (weights[:, 0, :, None] * weights[:, 1, None]).reshape(batch, self.bins ** 2, pixels)
        histogram = red_green @ (weights[:, 2] * foreground[:, None]).transpose(1, 2)
        total = foreground.sum(dim=1, keepdim=True)
        histogram = histogram.flatten(1) / total.clamp(min=1e-6)
        mean_colour = (balanced * foreground[:, None]).sum(dim=2) / total.clamp(min=1e-6)
        share = total / foreground.shape[1]
        return torch.cat([histogram.sqrt(), share, mean_colour], dim=1)  # sqrt: Hellinger, for a linear head

    def dominant_colour(self, rgb: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """The weighted median colour of the product's flat interior, each channel encoded in `levels`
        triangular bins (so a linear head can draw a boundary anywhere along it), then raw, then the
        share of the frame it was taken from.

        Interior pixels are those that differ from none of their 4 neighbours by more than 4%: outlines,
        anti-aliased edges and print borders are mixtures of colours and drop out. The median, not the
        mean, so a print that covers a third of the product does not pull the answer towards its colour."""
        if max(rgb.shape[-2:]) > self.detail_resolution:
            rgb = nn.functional.adaptive_avg_pool2d(rgb, self.detail_resolution)
        light = nn.functional.interpolate(light, size=rgb.shape[-2:], mode="bilinear", align_corners=True)
        balanced = (rgb / light).clamp(0, 1.2)
        distance = self.distance_from_light(rgb, light)
        foreground = ((distance - 0.03) / 0.03).clamp(0, 1) * ~self.letterbox_padding(rgb)
        interior = (1 - self.roughness(balanced) / 0.04).clamp(0, 1)
        # A tiny weight on every foreground pixel (and less on all others) so an image without a flat
        # interior still has a median; the share says how little it rests on.
        flat = foreground * interior
        weights = (flat + 1e-6 * foreground + 1e-9).flatten(1)  # (B, N)
        median = self.weighted_median(balanced.flatten(2) / 1.2, weights) * 1.2  # (B, 3)
        centres = torch.linspace(0, 1, self.levels, device=rgb.device)
        encoded = (1 - (median[..., None] - centres).abs() * (self.levels - 1)).clamp(min=0).flatten(1)
        share = flat.flatten(1).mean(dim=1, keepdim=True)
        return torch.cat([encoded, median, share], dim=1)

    @staticmethod
    def distance_from_light(rgb: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H, W): how far each pixel is from the light falling on it, relative to that
        light (so dim corners are not "product"), in its most different channel."""
        return ((rgb - light).abs() / light).amax(dim=1)

    @staticmethod
    def letterbox_padding(rgb: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """True where every channel (along `dim`) is pure white: the letterbox's padding, which no light fell on."""
        return rgb.amin(dim=dim) >= 0.999

    @staticmethod
    def roughness(image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H, W): each pixel's largest difference, in any channel, from its 4 neighbours."""
        across = (image[..., :, 1:] - image[..., :, :-1]).abs().amax(dim=1)  # (B, H, W-1): pixel vs right
        down = (image[..., 1:, :] - image[..., :-1, :]).abs().amax(dim=1)  # (B, H-1, W): pixel vs below
        rough = torch.zeros_like(image[:, 0])
        rough[..., :, 1:] = across
        rough[..., :, :-1] = torch.maximum(rough[..., :, :-1], across)
        rough[..., 1:, :] = torch.maximum(rough[..., 1:, :], down)
        rough[..., :-1, :] = torch.maximum(rough[..., :-1, :], down)
        return rough

    @staticmethod
    def weighted_median(values: torch.Tensor, weights: torch.Tensor, steps: int = 512) -> torch.Tensor:
        """Per channel of `values` (B, C, N) in [0, 1], the weighted median to 1/`steps`, by a weighted
        histogram: linear in N, where sorting is not."""
        index = (values * (steps - 1)).round().long().clamp(0, steps - 1)
        mass = torch.zeros(*values.shape[:2], steps, device=values.device)
        mass.scatter_add_(2, index, weights[:, None].expand_as(values))
        cumulative = mass.cumsum(dim=2)
        below = (cumulative < cumulative[..., -1:] / 2).sum(dim=2).clamp(max=steps - 1)
        return below / (steps - 1)

    @staticmethod
    def background_light(rgb: torch.Tensor, ring: int = 6) -> torch.Tensor:
        """A plane a + b*x + c*y per channel fitted to the frame's outer ring: studio light falls off smoothly
        across the frame. Pure white (the letterbox padding, which no light fell on) is left out, and the fit
        is repeated without the 40% of lit ring pixels that fit worst (the product reaching into the ring)."""
        batch, _, height, width = rgb.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height, device=rgb.device),
                                torch.linspace(-1, 1, width, device=rgb.device), indexing="ij")
        on_ring = torch.zeros(height, width, dtype=torch.bool, device=rgb.device)
        on_ring[:ring], on_ring[-ring:], on_ring[:, :ring], on_ring[:, -ring:] = True, True, True, True
        design = torch.stack([torch.ones_like(xs), xs, ys], dim=-1)  # (h, w, 3)
        a = design[on_ring]  # (R, 3)
        values = rgb.permute(0, 2, 3, 1)[:, on_ring]  # (B, R, 3)
        lit = (~ColourFeatures.letterbox_padding(values, dim=2)).float()  # (B, R)
        weights = lit
        for _ in range(2):
            aw = a[None] * weights[..., None]  # (B, R, 3)
            normal = aw.transpose(1, 2) @ a[None] + 1e-3 * torch.eye(3, device=rgb.device)
            coefficients = torch.linalg.solve(normal, aw.transpose(1, 2) @ values)  # (B, 3 terms, 3 channels)
            residual = (a[None] @ coefficients - values).abs().amax(dim=2)  # (B, R)
            cut = torch.nanquantile(residual.masked_fill(lit == 0, float("nan")), 0.6, dim=1, keepdim=True)
            weights = lit * (residual <= cut.nan_to_num(float("inf"))).float()
        light = (design.view(1, -1, 3) @ coefficients).view(batch, height, width, 3).permute(0, 3, 1, 2)
        # No usable ring (a product filling the frame, or all padding): assume white light.
        usable = (weights.sum(dim=1) >= 8).view(batch, 1, 1, 1)
        return torch.where(usable, light, torch.ones_like(light)).clamp(0.2, 1.2)


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

    def probabilities(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: (logits[name] / self.temperature[i]).softmax(-1) for i, name in enumerate(self.names)}


def _standardise(norm: nn.BatchNorm1d, features: torch.Tensor) -> torch.Tensor:
    """BatchNorm, except for a training batch of one (the last of an epoch, or one process's share), which
    has no spread to measure: it is standardised with the running statistics instead."""
    if norm.training and features.shape[0] == 1:
        return nn.functional.batch_norm(features, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                        training=False, eps=norm.eps)
    return norm(features)


def attribute_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], label_smoothing: float = 0.0,
                   logit_adjustment: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Sum of per-attribute cross-entropies; -100 marks a missing label and is skipped.

    `logit_adjustment` (tau * log prior per class, Menon et al. 2021) is added to the logits for the loss
    only: the head then learns balanced scores, so rare classes are not drowned by frequent ones.
    """
    total = torch.zeros((), device=next(iter(logits.values())).device)
    for name, target in labels.items():
        if (target != -100).any():
            scores = logits[name]
            if logit_adjustment and name in logit_adjustment:
                scores = scores + logit_adjustment[name].to(scores.device)
            total = total + nn.functional.cross_entropy(scores, target, ignore_index=-100,
                                                        label_smoothing=label_smoothing)
    return total


# --- one encoder pass ------------------------------------------------------------------------------
@dataclass
class Encoded:
    pooled: torch.Tensor  # (B, C): for the heads
    tokens: torch.Tensor  # (B, h*w, C): for the caption decoder
    colour: torch.Tensor | None  # (B, F): colour features of the same pixels, when the model has them


def encode(backbone: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], colour: ColourFeatures | None,
           pixels: torch.Tensor) -> Encoded:
    """One backbone pass (`backbone` returns pooled features and tokens) and the colour features of the same
    pixels: every path from pixels to features, in training and in serving, goes through here."""
    pooled, tokens = backbone(pixels)
    return Encoded(pooled, tokens, colour(pixels) if colour is not None else None)


class AttributeClassifier(nn.Module):
    """What the heads stage trains: backbone (when fine-tuning), colour features and heads, with its loss.

    forward() takes pixels, or features computed once (a frozen backbone), and returns the loss beside the
    logits, as the Hugging Face Trainer expects."""

    def __init__(self, heads: AttributeHeads, encoder: TinyVitEncoder | None, colour: ColourFeatures | None,
                 label_smoothing: float = 0.0, logit_adjustment: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.heads, self.encoder, self.colour = heads, encoder, colour
        self.label_smoothing = label_smoothing
        self.logit_adjustment = logit_adjustment

    def forward(self, pixel_values: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                colour: torch.Tensor | None = None, **labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if pooled is None:
            encoded = encode(self.encoder.features, self.colour, pixel_values)
            pooled, colour = encoded.pooled, encoded.colour
        logits = self.heads(pooled, colour)
        targets = {name.removeprefix("label_"): value for name, value in labels.items()}
        loss = attribute_loss(logits, targets, self.label_smoothing, self.logit_adjustment) if targets else None
        return {"loss": loss, **{f"logits_{k}": v for k, v in logits.items()}}


# --- the whole model ---------------------------------------------------------------------------------
@dataclass
class Captions:
    texts: list[str]
    confidences: list[float]  # geometric mean of the chosen tokens' probabilities
    token_counts: list[int] = field(default_factory=list)


class EnrichModel(nn.Module):
    """Backbone + colour features + heads + captioner, as a bundle holds them; `captioner.encoder` is the one
    backbone. Inference runs the backbone through an encoder backend (`backends.py`) and the stages in
    `pipeline.py`; training wraps the parts it trains instead (AttributeClassifier, the captioner alone)."""

    def __init__(self, captioner: VisionEncoderDecoderModel, heads: AttributeHeads,
                 colour: ColourFeatures | None = None) -> None:
        super().__init__()
        self.captioner = captioner
        self.heads = heads
        self.colour = colour

    @property
    def encoder(self) -> TinyVitEncoder:
        return self.captioner.encoder

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
