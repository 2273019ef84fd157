"""The model's graphs on OpenVINO, without torch: the bundle's export (`export.py` writes it, `export_store.py`
finds and checks it) compiled for this CPU; colour features in NumPy, search in `search.py`.

The backbone runs at the chosen precision (bf16 through OpenVINO's inference precision hint); the heads and the
caption graphs always run in fp32, as on the torch backend, which autocasts only the backbone. The heads are
cheap and the colour features' fine distinctions are what the baseColour head reads; a decoder step in bf16
turns near-tied tokens the other way, and a caption then differs from fp32's.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, BackendChoice, Precision, cpu_budget
from .colour import ColourFeatures
from .encoding import Encoded, encode
from .export_store import GRAPHS, ExportManifest, ExportMissing
from .resident import drop_mapped_pages
from .search import DecoderRun

log = logging.getLogger("enrich.backends")


def import_openvino():
    """openvino, with its converter's usage telemetry off.

    Unless a consent file says otherwise, OpenVINO's model converter reports usage to Google Analytics from
    forked processes. A server must not phone home (nor fork under gRPC's threads): with its telemetry
    package blocked, the converter falls back to its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


class OpenVinoBackend(Backend):
    """Every graph compiled by OpenVINO for this CPU.

    An encoder batch runs as two halves on two streams, each with half the threads: small convolutions and
    attention blocks keep one thread each busier than two threads share one op (the README has the figures).
    A lone image takes the other compilation, which gives it every thread, so a single unary call does not
    wait twice as long. The caption steps are small matrix products and take every thread."""

    def __init__(self, folder: Path, manifest: ExportManifest, colour: ColourFeatures | None,
                 precision: Precision = Precision.FP32, threads: int = 0) -> None:
        if manifest.colour != (colour is not None):
            raise ExportMissing(f"the OpenVINO export in {folder} does not match the bundle's colour features")
        self.choice = BackendChoice("openvino", precision)
        self.device = "cpu"
        self.folder, self.manifest, self.colour = folder, manifest, colour
        self.candidates = manifest.candidates
        self.temperatures = dict(zip(manifest.attributes, manifest.temperatures, strict=True))
        threads = threads or cpu_budget()
        self.streams = 2 if threads >= 2 else 1
        requests = compile_graphs(folder, precision, threads, self.streams)
        self.single, self.parallel = requests["single"], requests.get("parallel", [])
        self.heads, self.cross, self.step = requests["heads"], requests["caption_cross"], requests["caption_step"]

    # --- the heads' part ------------------------------------------------------------------------------
    def encode(self, pixels: np.ndarray) -> Encoded:
        return encode(self.backbone, self.colour, np.ascontiguousarray(pixels, dtype=np.float32))

    def backbone(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.streams == 1 or len(pixels) < 2:
            outputs = self.single.infer([pixels], share_inputs=True)
            return outputs[0].copy(), outputs[1].copy()
        parts = [np.ascontiguousarray(part) for part in np.array_split(pixels, self.streams)]  # alive until done
        started = []
        try:
            for request, part in zip(self.parallel, parts, strict=True):
                request.start_async([part], share_inputs=True)
                started.append(request)
        finally:  # even when one fails, none may still read `parts` (shared, not copied) after we return
            for request in started:
                request.wait()
        pooled, tokens = (np.concatenate([r.get_output_tensor(i).data for r in self.parallel]) for i in range(2))
        return pooled, tokens

    def logits(self, encoded: Encoded) -> dict[str, np.ndarray]:
        inputs = [encoded.pooled] + ([encoded.colour] if self.colour is not None else [])
        outputs = self.heads.infer(inputs)
        return {name: outputs[i].copy() for i, name in enumerate(self.manifest.attributes)}

    def release_loading_memory(self) -> None:
        # After the first passes the graphs run on OpenVINO's own copies of the weights (a lookup table may
        # still read a row from its file now and then: that page comes back from the file).
        drop_mapped_pages(self.weight_files)

    @property
    def weight_files(self) -> list[Path]:
        return [self.folder / f"{graph}.bin" for graph in GRAPHS]

    # --- the caption's part ---------------------------------------------------------------------------
    def start_captions(self, tokens: list[np.ndarray]) -> DecoderRun:
        outputs = self.cross.infer([np.ascontiguousarray(np.stack(tokens), dtype=np.float32)])
        return OpenVinoRun(self.step, outputs[0].copy(), outputs[1].copy())


class OpenVinoRun(DecoderRun):
    def __init__(self, step, cross_keys: np.ndarray, cross_values: np.ndarray) -> None:
        super().__init__(cross_keys, cross_values)
        self.request = step

    def take(self, cache: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.take(cache, rows, axis=1)

    def advance(self, tokens: np.ndarray, position: int) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        outputs = self.request.infer([tokens, np.full((1, 1), position, np.int64), self.keys, self.values,
                                      self.cross_keys, self.cross_values], share_inputs=True)
        return tuple(outputs[i].copy() for i in range(4))


def compile_graphs(folder: Path, precision: Precision, threads: int, streams: int) -> dict[str, Any]:
    """Infer requests for every graph: the encoder at `precision` (once for a lone image, once for `streams`
    parts of a batch), the others in fp32."""
    ov = import_openvino()
    core = ov.Core()
    fast = {"INFERENCE_PRECISION_HINT": "bf16" if precision is Precision.BF16 else "f32",
            "INFERENCE_NUM_THREADS": threads}
    exact = {**fast, "INFERENCE_PRECISION_HINT": "f32"}
    # The caption graphs see a new key length at every step. With its runtime kernel cache on, OpenVINO's CPU
    # plugin (2026.4) reused a kernel of another length and attended wrongly from the 16th token on; off, every
    # caption is transformers' own, and the steps run faster.
    caption = {**exact, "CPU_RUNTIME_CACHE_CAPACITY": "0"}
    plans = {"single": ("encoder", fast, "LATENCY"), "heads": ("heads", exact, "LATENCY"),
             **{name: (name, caption, "LATENCY") for name in GRAPHS[2:]}}
    if streams > 1:
        plans["parallel"] = ("encoder", {**fast, "NUM_STREAMS": streams}, "THROUGHPUT")

    def compiled(plan: tuple[str, dict, str]):
        name, config, hint = plan
        return core.compile_model(folder / f"{name}.xml", "CPU", {**config, "PERFORMANCE_HINT": hint})

    # Compiling is mostly single-threaded and releases the GIL: the graphs compile side by side.
    with ThreadPoolExecutor(len(plans)) as pool:
        models = dict(zip(plans, pool.map(compiled, plans.values()), strict=True))
    requests: dict[str, Any] = {name: model.create_infer_request() for name, model in models.items()}
    if streams > 1:
        requests["parallel"] = [models["parallel"].create_infer_request() for _ in range(streams)]
    return requests
