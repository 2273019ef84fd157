"""A bundle's every stage as OpenVINO IR, for serving without torch (`exported.py` runs them):

    BUNDLE/openvino/
      encoder.xml/.bin    pixels (B, 3, H, W) -> pooled (B, C), tokens (B, h*w, C)    the backbone pass
      heads.xml/.bin      pooled, colour -> raw logits per attribute
      cross.xml/.bin      tokens -> every decoder layer's cross-attention keys and values, once per image
      step.xml/.bin       one decoder step: the last token, its position, the self-attention cache and the
                          cross keys/values -> log-probabilities of the next token and the grown cache
      tokenizer.json      the caption tokenizer, for the `tokenizers` library
      export.json         ExportManifest: what was exported, from which model, by which versions (written last)

The graphs are traced from the bundle's own modules: the decoder step calls each GPT-2 block's layers in the
order GPT-2's forward does, with the keys and values passed in and out instead of held in a cache object, so
the step is a plain function of tensors that the converter can trace. Weights are saved in fp32; the
precision is chosen when a server compiles them. This module needs torch; reading the export does not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .bundle import Bundle
from .model import AttributeHeads, TinyVitEncoder
from .openvino_backend import EXPORT_DIR, EXPORT_FORMAT, MANIFEST_FILE, ExportManifest, import_openvino

log = logging.getLogger("enrich.export")


class Backbone(nn.Module):
    def __init__(self, encoder: TinyVitEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.features(pixel_values)


class Heads(nn.Module):
    """The heads' raw logits as a tuple, in `heads.names` order (calibration stays outside, in NumPy)."""

    def __init__(self, heads: AttributeHeads) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, pooled: torch.Tensor, colour: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        logits = self.heads(pooled, colour)
        return tuple(logits[name] for name in self.heads.names)


def split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, E) -> (B, heads, T, E / heads)."""
    batch, length, width = states.shape
    return states.view(batch, length, heads, width // heads).transpose(1, 2)


def merge_heads(states: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, D) -> (B, T, heads * D)."""
    batch, heads, length, depth = states.shape
    return states.transpose(1, 2).reshape(batch, length, heads * depth)


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float) -> torch.Tensor:
    """One query position (B, heads, 1, D) against every key (B, heads, T, D): no causal mask is needed, the keys
    are all in the past. Products and sums, not matrix products: OpenVINO's CPU plugin reuses a cached matmul
    kernel once the key length grows past 16 and returns wrong values (2026.4; a fresh compilation at that
    length, or its kernel cache off, is right), and with one query row a matmul gains nothing."""
    weights = ((query * keys).sum(dim=-1) * scaling).softmax(dim=-1)  # (B, heads, T)
    return (weights.unsqueeze(-1) * values).sum(dim=-2, keepdim=True)


class CrossKeys(nn.Module):
    """Encoder tokens -> each layer's cross-attention keys and values (L, B, heads, N, D): the image's part of
    every decoder step, computed once per caption rather than once per token."""

    def __init__(self, captioner) -> None:
        super().__init__()
        self.project = getattr(captioner, "enc_to_dec_proj", None) or nn.Identity()
        self.blocks = captioner.decoder.transformer.h
        self.heads = captioner.decoder.config.n_head

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.project(tokens)
        keys, values = [], []
        for block in self.blocks:
            key, value = block.crossattention.c_attn(hidden).split(block.crossattention.split_size, dim=2)
            keys.append(split_heads(key, self.heads))
            values.append(split_heads(value, self.heads))
        return torch.stack(keys), torch.stack(values)


class DecoderStep(nn.Module):
    """One GPT-2 step with cross-attention: the token just chosen (B, 1) at `position` -> log-probabilities of
    the next (B, vocab) and the self-attention keys and values with this position appended (L, B, heads, T+1, D).
    The same arithmetic as GPT2Block.forward in eval mode, layer by layer."""

    def __init__(self, captioner) -> None:
        super().__init__()
        decoder = captioner.decoder
        self.transformer, self.lm_head = decoder.transformer, decoder.lm_head
        self.heads = decoder.config.n_head

    def forward(self, input_ids: torch.Tensor, position: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor, cross_keys: torch.Tensor, cross_values: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        transformer = self.transformer
        hidden = transformer.wte(input_ids) + transformer.wpe(position)
        keys, values = [], []
        for layer, block in enumerate(transformer.h):
            attention = block.attn
            query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2)
            key = torch.cat([past_keys[layer], split_heads(key, self.heads)], dim=2)
            value = torch.cat([past_values[layer], split_heads(value, self.heads)], dim=2)
            attended = attend(split_heads(query, self.heads), key, value, attention.scaling)
            hidden = hidden + attention.c_proj(merge_heads(attended))
            cross = block.crossattention
            query = split_heads(cross.q_attn(block.ln_cross_attn(hidden)), self.heads)
            attended = attend(query, cross_keys[layer], cross_values[layer], cross.scaling)
            hidden = hidden + cross.c_proj(merge_heads(attended))
            hidden = hidden + block.mlp(block.ln_2(hidden))
            keys.append(key)
            values.append(value)
        logits = self.lm_head(transformer.ln_f(hidden))[:, -1]
        return logits.float().log_softmax(dim=-1), torch.stack(keys), torch.stack(values)


@dataclass
class Graph:
    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    shapes: list  # ov.PartialShape per input, -1 where it varies


@torch.no_grad()
def graphs(bundle: Bundle) -> list[Graph]:
    """What to convert, with example inputs of the bundle's shapes."""
    model = bundle.model
    height, width = bundle.preprocessing.input_size
    pixels = torch.zeros(2, 3, height, width)
    pooled, tokens = model.encoder.features(pixels)
    found = [Graph("encoder", Backbone(model.encoder), (pixels,), [[-1, 3, height, width]])]
    heads_example: tuple[torch.Tensor, ...] = (pooled,)
    heads_shapes = [[-1, pooled.shape[1]]]
    if model.colour is not None:  # computed in NumPy (colour.py), read by the heads
        colour = model.colour(pixels)
        heads_example += (colour,)
        heads_shapes.append([-1, colour.shape[1]])
    found.append(Graph("heads", Heads(model.heads), heads_example, heads_shapes))
    captioner = model.captioner
    cross = CrossKeys(captioner)
    cross_keys, cross_values = cross(tokens)
    config = captioner.decoder.config
    layers, heads, depth = config.n_layer, config.n_head, config.n_embd // config.n_head
    past = torch.zeros(layers, 2, heads, 1, depth)
    found.append(Graph("cross", cross, (tokens,), [[-1, -1, tokens.shape[2]]]))
    found.append(Graph("step", DecoderStep(captioner),
                       (torch.zeros(2, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), past, past,
                        cross_keys, cross_values),
                       [[-1, 1], [1], *[[layers, -1, heads, -1, depth]] * 4]))
    return found


@dataclass
class Exported:
    manifest: ExportManifest
    folder: Path
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


def manifest_of(bundle: Bundle) -> ExportManifest:
    from enrich_model import __version__ as code_version

    ov = import_openvino()
    model, tokenizer = bundle.model, bundle.tokenizer
    decoder = model.captioner.decoder.config
    generation = model.captioner.generation_config
    return ExportManifest(
        model_version=bundle.model_version, openvino=ov.__version__, enrich=code_version, format=EXPORT_FORMAT,
        input_size=list(bundle.preprocessing.input_size), colour=model.colour is not None,
        attributes=list(model.heads.names),
        temperatures=[float(t) for t in model.heads.temperature.tolist()],
        layers=decoder.n_layer, heads=decoder.n_head, head_size=decoder.n_embd // decoder.n_head,
        vocab_size=decoder.vocab_size, start_token=int(generation.decoder_start_token_id),
        eos_token=int(generation.eos_token_id), pad_token=int(generation.pad_token_id),
        special_tokens=sorted(int(i) for i in tokenizer.all_special_ids),
        max_new_tokens=int(generation.max_new_tokens), max_positions=decoder.n_positions)


def export_bundle(bundle: Bundle, folder: Path | None = None) -> Exported:
    """Every graph of `bundle`, written to `folder` (default BUNDLE/openvino) beside the final folder and
    renamed into place, manifest last: servers sharing a bundle never read a half-written export."""
    if bundle.path is None and folder is None:
        raise ValueError("a bundle loaded from memory needs a folder to export to")
    ov = import_openvino()
    folder = folder or bundle.path / EXPORT_DIR
    started = time.perf_counter()
    manifest = manifest_of(bundle)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".openvino-", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the export from a server running as another user
    try:
        for graph in graphs(bundle):
            converted = convert(ov, graph)
            ov.save_model(converted, staging / f"{graph.name}.xml", compress_to_fp16=False)  # fp32 stays exact
        bundle.tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        (staging / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    log.info("exported %s to OpenVINO in %.1f s", bundle.model_version, seconds)
    return Exported(manifest, folder, seconds, sorted(p.name for p in folder.iterdir()))


def convert(ov, graph: Graph):
    # TinyViT's padding checks are shape-dependent Python branches; at the bundle's fixed input size the
    # traced branch is the right one for every image, so the tracer's warnings say nothing here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecating the tracer OpenVINO converts with
        return ov.convert_model(graph.module.eval(), example_input=graph.example,
                                input=[ov.PartialShape(shape) for shape in graph.shapes])


def export_at_start(path: Path, config=None) -> Path:
    """A server's export when the bundle has none: written beside the bundle, or, where that folder is
    read-only, into a temporary folder for this process only. Returns the folder."""
    from .bundle import load_bundle

    bundle = load_bundle(path, config=config)
    try:
        return export_bundle(bundle).folder
    except OSError as error:  # a read-only bundle still serves; it just converts at each start
        log.warning("cannot write the OpenVINO export beside %s (%s): it will be made again next start "
                    "(`enrich export` writes it ahead of time)", path, error.strerror or error)
        return export_bundle(bundle, Path(tempfile.mkdtemp(prefix="enrich-openvino-")) / EXPORT_DIR).folder
