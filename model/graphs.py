"""One definition of each graph the model runs, whatever runs it: the torch backend runs these modules eagerly
(CPU and GPU), and `export.py` converts the same modules to OpenVINO IR.

    EncoderGraph  pixels (B, 3, H, W) -> pooled (B, C), tokens (B, N, C)                    the backbone pass
    HeadsGraph    pooled (B, C)[, colour (B, F)] -> raw logits per attribute, in the heads' order
    CaptionCross  tokens (B, N, C) -> every decoder layer's cross-attention keys and values (L, B, H, N, D),
                  once per image
    CaptionStep   the last tokens (B, 1) at `position` (1, 1), the self-attention keys and values so far
                  (L, B, H, T, D; T = 0 before the first token) and the cross-attention ones -> the next token's
                  candidates, the keys and values with this position added (L, B, H, T+1, D)

A row's candidates are its CANDIDATES most probable next tokens: their log-probabilities (a log-softmax over the
caption vocabulary) and their indices in that vocabulary (the tokens the catalogue's names use, recorded in the
bundle, or the tokenizer's whole vocabulary). Greedy and beam search over them are `search.py`, alike for every
backend.

The caption step drives the bundle's own transformers decoder through its forward, with an explicit cache built
from these tensors, as `generate` drives it, and the cross graph calls the decoder's own projection modules: no
layer is re-implemented here, so a transformers release that renames a module's attributes changes nothing, and
any decoder with cross-attention and a linear output head over its final hidden state serves. (The decoder's
layers are in the step alone, so an export holds one copy of their weights.) Attention runs through `attend`,
registered with transformers' AttentionInterface: its sdpa with the scale applied to the one new query row
(OpenVINO would otherwise scale every cached key at every step).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from transformers import AttentionInterface, EncoderDecoderCache, VisionEncoderDecoderModel
from transformers.cache_utils import Cache, DynamicLayer

from .model import AttributeHeads, EnrichModel, TinyVitEncoder

CANDIDATES = 16  # next-token candidates per row: beam search with B beams needs 2 B of them
ATTENTION = "enrich_sdpa"


def attend(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           attention_mask: torch.Tensor | None, scaling: float | None = None, **kwargs) -> tuple:
    """transformers' sdpa attention, with the queries scaled instead of the keys: the same arithmetic."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    return AttentionInterface()["sdpa"](module, query * scaling, key, value, attention_mask, scaling=1.0, **kwargs)


AttentionInterface.register(ATTENTION, attend)


class EncoderGraph(nn.Module):
    def __init__(self, encoder: TinyVitEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.features(pixel_values)


class HeadsGraph(nn.Module):
    """The heads' raw logits as a tuple, in `heads.names` order (calibration is the pipeline's, in NumPy)."""

    def __init__(self, heads: AttributeHeads) -> None:
        super().__init__()
        self.heads = heads

    @property
    def names(self) -> list[str]:
        return self.heads.names

    def forward(self, pooled: torch.Tensor, colour: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        logits = self.heads(pooled, colour)
        return tuple(logits[name] for name in self.heads.names)


# --- the caption decoder -------------------------------------------------------------------------------
class _PresizedLayer(DynamicLayer):
    """A cache layer whose empty start has the rank of what it will hold: torch concatenates its default 1-D empty
    tensor with keys, a converter cannot."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states[..., :0, :], value_states[..., :0, :]


def filled_cache(keys: torch.Tensor | None = None, values: torch.Tensor | None = None) -> Cache:
    """A transformers cache holding `keys` and `values` (L, B, H, T, D); empty (filled by the forward) when None."""
    if keys is None:
        return Cache(layer_class_to_replicate=_PresizedLayer)
    cache = Cache(layers=[_PresizedLayer() for _ in range(len(keys))])
    for layer, layer_keys, layer_values in zip(cache.layers, keys, values, strict=True):
        layer.update(layer_keys, layer_values)
    return cache


def cache_tensors(cache: Cache) -> tuple[torch.Tensor, torch.Tensor]:
    """A transformers cache's keys and values, stacked (L, B, H, T, D)."""
    return (torch.stack([layer.keys for layer in cache.layers]),
            torch.stack([layer.values for layer in cache.layers]))


class CaptionDecoder(nn.Module):
    """The captioner's decoder over the caption vocabulary: its body with a cache, and its input embedding and
    output head restricted to the vocabulary's tokens (the decoder's own modules when it is the whole one)."""

    def __init__(self, captioner: VisionEncoderDecoderModel, vocabulary: Sequence[int] | None = None) -> None:
        super().__init__()
        decoder = captioner.decoder
        decoder.set_attn_implementation(ATTENTION)
        self.project = getattr(captioner, "enc_to_dec_proj", None) or nn.Identity()
        self.body = decoder.base_model
        self.embed, self.head = decoder.get_input_embeddings(), decoder.get_output_embeddings()
        if vocabulary is not None:
            self.embed, self.head = restricted(self.embed, self.head, vocabulary)
        self.width = self.embed.weight.shape[1]
        self.candidates = min(CANDIDATES, self.head.weight.shape[0])
        self.cache_argument = "cache" if "cache" in inspect.signature(self.body.forward).parameters \
            else "past_key_values"  # transformers before 5.x named it so

    def next_token(self, tokens: torch.Tensor, position: torch.Tensor, cache: EncoderDecoderCache,
                   encoder_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step (the cache grows in place) -> the candidates: (log-probabilities, indices)."""
        hidden = self.body(inputs_embeds=self.embed(tokens), position_ids=position,
                           encoder_hidden_states=encoder_states, use_cache=True,
                           **{self.cache_argument: cache}).last_hidden_state
        scores = self.head(hidden[:, -1]).float().log_softmax(dim=-1)
        best = scores.topk(self.candidates, dim=-1)
        return best.values, best.indices


def restricted(embed: nn.Module, head: nn.Module, vocabulary: Sequence[int]) -> tuple[nn.Embedding, nn.Linear]:
    """Copies of the decoder's input embedding and output head that hold only `vocabulary`'s rows."""
    rows = torch.as_tensor(list(vocabulary), dtype=torch.long, device=embed.weight.device)
    small_embed = nn.Embedding.from_pretrained(embed.weight.detach()[rows].clone(), freeze=True)
    bias = getattr(head, "bias", None)
    small_head = nn.Linear(head.weight.shape[1], len(rows), bias=bias is not None, device=head.weight.device)
    with torch.no_grad():
        small_head.weight.copy_(head.weight[rows])
        if bias is not None:
            small_head.bias.copy_(bias[rows])
    return small_embed, small_head


class CaptionCross(nn.Module):
    """Encoder tokens -> every decoder layer's cross-attention keys and values (L, B, H, N, D), computed once per
    image by the decoder's own modules: those that read the encoder states, found by watching one step of the
    decoder (`cross_projections`) and checked against the keys and values that step cached."""

    def __init__(self, decoder: CaptionDecoder) -> None:
        super().__init__()
        self.project = decoder.project
        found, self.heads = cross_projections(decoder)
        self.projections = nn.ModuleList(nn.ModuleList(modules) for modules in found)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.project(tokens)
        layers = [keys_and_values([module(states) for module in modules], self.heads) for modules in self.projections]
        return torch.stack([keys for keys, _ in layers]), torch.stack([values for _, values in layers])


def keys_and_values(outputs: list[torch.Tensor], heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's projections of the encoder states -> its keys and values (B, H, N, D): one module gives both
    (side by side, as GPT-2's does), or two give one each."""
    keys, values = outputs[0].chunk(2, dim=-1) if len(outputs) == 1 else outputs
    return keys.unflatten(-1, (heads, -1)).transpose(1, 2), values.unflatten(-1, (heads, -1)).transpose(1, 2)


@torch.no_grad()
def cross_projections(decoder: CaptionDecoder) -> tuple[list[list[nn.Module]], int]:
    """Per decoder layer, the modules that turn the encoder states into its cross-attention keys and values, in
    order, and the number of heads. Raises ValueError when the decoder computes them in another way."""
    parameter = next(decoder.parameters())
    states = torch.randn(1, 3, decoder.width, device=parameter.device, dtype=parameter.dtype)
    seen: list[tuple[nn.Module, torch.Tensor]] = []

    def watch(module: nn.Module, args: tuple, output: object) -> None:
        if args and args[0] is states and isinstance(output, torch.Tensor):
            seen.append((module, output))

    leaves = [module for module in decoder.body.modules() if not list(module.children())]
    hooks = [module.register_forward_hook(watch) for module in leaves]
    try:
        cache = EncoderDecoderCache(filled_cache(), filled_cache())
        first = torch.zeros(1, 1, dtype=torch.long, device=states.device)
        decoder.next_token(first, first, cache, states)
    finally:
        for hook in hooks:
            hook.remove()
    keys, values = cache_tensors(cache.cross_attention_cache)
    heads, found = keys.shape[2], []
    for layer in range(len(keys)):
        for count in (1, 2):
            outputs = [output for _, output in seen[:count]]
            if len(outputs) == count and reproduces(outputs, heads, keys[layer], values[layer]):
                found.append([module for module, _ in seen[:count]])
                seen = seen[count:]
                break
        else:
            raise ValueError(f"the caption decoder ({type(decoder.body).__name__}) computes layer {layer}'s cross-"
                             "attention keys and values in a way Enrich's caption graphs do not follow")
    return found, heads


def reproduces(outputs: list[torch.Tensor], heads: int, keys: torch.Tensor, values: torch.Tensor) -> bool:
    try:
        ours = keys_and_values(outputs, heads)
    except (RuntimeError, ValueError):  # shapes that do not split into these heads
        return False
    return all(a.shape == b.shape and torch.allclose(a, b) for a, b in zip(ours, (keys, values), strict=True))


class CaptionStep(nn.Module):
    def __init__(self, decoder: CaptionDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor, position: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                cross_keys: torch.Tensor, cross_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = EncoderDecoderCache(filled_cache(keys, values), filled_cache(cross_keys, cross_values))
        # The decoder attends to the image only when given encoder states; the cache already holds their keys
        # and values, so a placeholder of one position stands in for them.
        placeholder = cross_keys.new_zeros(tokens.shape[0], 1, self.decoder.width)
        log_probs, indices = self.decoder.next_token(tokens, position.expand(tokens.shape[0], 1), cache, placeholder)
        return (log_probs, indices, *cache_tensors(cache.self_attention_cache))


class ModelGraphs(nn.Module):
    """Every graph of one model, sharing its weights."""

    def __init__(self, model: EnrichModel, vocabulary: Sequence[int] | None) -> None:
        super().__init__()
        self.encoder = EncoderGraph(model.encoder)
        self.heads = HeadsGraph(model.heads)
        decoder = CaptionDecoder(model.captioner, vocabulary)
        self.caption_cross = CaptionCross(decoder)
        self.caption_step = CaptionStep(decoder)

    @property
    def candidates(self) -> int:
        return self.caption_step.decoder.candidates
