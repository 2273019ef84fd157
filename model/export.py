"""A bundle's graphs (`graphs.py`) as OpenVINO IR, for serving without torch; `export_store.py` says where exports
live and how they are checked. This module needs torch; reading an export does not.

Weights are saved in fp32; the precision is chosen when a server compiles them.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.utils import logging as hf_logging

from .bundle import Bundle
from .bundle_info import BundleInfo
from .caption_vocabulary import CaptionVocabulary
from .export_store import (
    EXPORT_DIR,
    EXPORT_FORMAT,
    ExportManifest,
    cache_folder,
    file_hashes,
    graph_files,
    graph_source,
    write_whole,
)
from .graphs import ModelGraphs
from .openvino_backend import import_openvino

log = logging.getLogger("enrich.export")


@dataclass
class Graph:
    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    shapes: list  # ov.PartialShape per input, -1 where it varies


@torch.no_grad()
def graphs_of(bundle: Bundle, graphs: ModelGraphs) -> list[Graph]:
    """What to convert, with example inputs of the bundle's shapes (two images, one cached position)."""
    model = bundle.model
    height, width = bundle.preprocessing.input_size
    pixels = torch.zeros(2, 3, height, width)
    pooled, tokens = graphs.encoder(pixels)
    heads_example: tuple[torch.Tensor, ...] = (pooled,)
    heads_shapes = [[-1, pooled.shape[1]]]
    if model.colour is not None:  # computed in NumPy (colour.py), read by the heads
        colour = model.colour(pixels)
        heads_example += (colour,)
        heads_shapes.append([-1, colour.shape[1]])
    cross_keys, cross_values = graphs.caption_cross(tokens)
    empty = cross_keys[:, :, :, :0]
    first = torch.zeros(2, 1, dtype=torch.long)  # any token, at position 0
    _, chosen, keys, values = graphs.caption_step(first, first[:1], empty, empty, cross_keys, cross_values)
    layers, _, heads, _, depth = keys.shape
    cache_shape = [layers, -1, heads, -1, depth]
    return [Graph("encoder", graphs.encoder, (pixels,), [[-1, 3, height, width]]),
            Graph("heads", graphs.heads, heads_example, heads_shapes),
            Graph("caption_cross", graphs.caption_cross, (tokens,), [[-1, -1, tokens.shape[2]]]),
            Graph("caption_step", graphs.caption_step,
                  (chosen[:, :1], torch.ones(1, 1, dtype=torch.long), keys, values, cross_keys, cross_values),
                  [[-1, 1], [1, 1], *[cache_shape] * 4])]


@dataclass
class Exported:
    manifest: ExportManifest
    folder: Path
    seconds: float = 0.0


def export_bundle(bundle: Bundle, folder: Path | None = None, replace: bool = True) -> Exported:
    """Every graph of `bundle`, written to `folder` (default BUNDLE/openvino) whole and renamed into place,
    manifest last. `replace=False` keeps a folder that exists by then (the cache: another server made it)."""
    if bundle.path is None and folder is None:
        raise ValueError("a bundle loaded from memory needs a folder to export to")
    folder = folder or bundle.path / EXPORT_DIR
    started = time.perf_counter()
    graphs = ModelGraphs(bundle.model.eval(), CaptionVocabulary.ids_of(bundle.config)).eval()
    manifest = manifest_of(bundle, graphs)

    def write(staging: Path) -> None:
        ov = import_openvino()
        for graph in graphs_of(bundle, graphs):
            ov.save_model(convert(ov, graph), staging / f"{graph.name}.xml", compress_to_fp16=False)  # fp32 stays exact
        manifest.files = file_hashes(staging, graph_files())
        manifest.write(staging)

    write_whole(folder, write, replace)
    seconds = time.perf_counter() - started
    log.info("exported %s to OpenVINO in %.1f s", bundle.model_version, seconds)
    return Exported(ExportManifest.read(folder), folder, seconds)


def export_to_cache(bundle: BundleInfo, cache: Path | None) -> Path:
    """A server's export at start: into the export cache, never into the bundle."""
    from .bundle import load_bundle

    folder = cache_folder(cache, bundle.config)
    export_bundle(load_bundle(bundle.path, config=bundle.config), folder, replace=False)
    return folder


def manifest_of(bundle: Bundle, graphs: ModelGraphs) -> ExportManifest:
    from enrich_model import __version__ as code_version

    config, heads = bundle.config, bundle.model.heads
    made_by = {"enrich": code_version, "openvino": import_openvino().__version__, "torch": torch.__version__,
               "transformers": config.versions.get("transformers", "")}
    return ExportManifest(
        format=EXPORT_FORMAT, model_version=config.model_version, weights_sha256=config.weights_sha256,
        source_sha256=graph_source(config), files={}, input_size=list(bundle.preprocessing.input_size),
        colour=bundle.model.colour is not None, attributes=list(heads.names),
        temperatures=[float(t) for t in heads.temperature.tolist()], candidates=graphs.candidates, made_by=made_by)


def convert(ov, graph: Graph):
    # TinyViT's padding checks are shape-dependent Python branches; at the bundle's fixed input size the
    # traced branch is the right one for every image, so the tracer's warnings say nothing here. transformers'
    # own notices while the converter walks its modules (its loss-type fallback, say) are not the user's either.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch deprecating the tracer OpenVINO converts with
            return ov.convert_model(graph.module.eval(), example_input=graph.example,
                                    input=[ov.PartialShape(shape) for shape in graph.shapes])
    finally:
        hf_logging.set_verbosity(verbosity)
