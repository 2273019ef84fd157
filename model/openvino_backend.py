"""The whole model on OpenVINO, without torch: the bundle's export (`export.py` writes it) compiled for this
CPU, the heads' calibration and the caption search in NumPy, the tokenizer from the `tokenizers` library.

    pixels -> encoder.xml, colour.py (NumPy) -> heads.xml -> logits   the heads' part
    tokens -> cross.xml once -> step.xml per token (search.py)        the caption's part

The backbone runs at the chosen precision (bf16 through OpenVINO's inference precision hint); the colour
features, the heads and the decoder always run in fp32, as on the torch backend, which autocasts only the
backbone. The heads are cheap and the colour features' fine distinctions are what the baseColour head reads;
a decoder step in bf16 turns near-tied tokens the other way, and a caption then differs from fp32's.
"""

from __future__ import annotations

import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .backends import Backend, BackendChoice, Precision, cpu_budget
from .colour import ColourFeatures
from .encoding import Encoded, encode
from .options import BackendError
from .resident import drop_mapped_pages
from .search import Captions, Tokens, beam_search, greedy

log = logging.getLogger("enrich.backends")

EXPORT_DIR = "openvino"
MANIFEST_FILE = "export.json"
# Raised whenever the graphs compute something else: an export of another format is made again, not trusted.
EXPORT_FORMAT = 2


@dataclass
class ExportManifest:
    """export.json: what `enrich export` wrote, and the facts the runtime needs that are not in the graphs."""

    model_version: str
    openvino: str
    enrich: str
    format: int  # EXPORT_FORMAT of the code that wrote it
    input_size: list[int]
    colour: bool  # whether the heads read colour features (computed in NumPy: colour.py)
    attributes: list[str]  # the heads' outputs, in order
    temperatures: list[float]  # per attribute: calibrated probabilities are softmax(logits / temperature)
    layers: int
    heads: int
    head_size: int
    vocab_size: int
    start_token: int
    eos_token: int
    pad_token: int
    special_tokens: list[int]
    max_new_tokens: int
    max_positions: int

    @property
    def graphs(self) -> list[str]:
        return ["encoder", "heads", "cross", "step"]

    @property
    def files(self) -> list[str]:
        return [*(f"{g}.{ext}" for g in self.graphs for ext in ("xml", "bin")), "tokenizer.json", MANIFEST_FILE]


class ExportMissing(BackendError):
    """The bundle has no usable export; the message says what is missing and how to make it."""


def import_openvino():
    """openvino, with its converter's usage telemetry off.

    Unless a consent file says otherwise, OpenVINO's model converter reports usage to Google Analytics from
    forked processes. A server must not phone home (nor fork under gRPC's threads): with its telemetry
    package blocked, the converter falls back to its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def read_manifest(folder: Path, model_version: str) -> ExportManifest:
    """The export in `folder` (BUNDLE/openvino), checked: present, whole, of this model, by this OpenVINO and
    this Enrich."""
    from enrich_model import __version__ as code_version

    bundle = folder.parent
    how = f"run `enrich export {bundle}` where torch is installed (the serve or train extra)"
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ExportMissing(f"{bundle} has no OpenVINO export ({EXPORT_DIR}/{MANIFEST_FILE} is missing): {how}")
    try:
        data = json.loads(path.read_text())
        manifest = ExportManifest(**{f.name: data[f.name] for f in fields(ExportManifest)})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportMissing(f"{path} cannot be read ({error}); it is from another build or damaged: {how}") from None
    ov = import_openvino()
    stale = [f"{what} {theirs} (this server has {ours})" for what, theirs, ours in (
        ("model", manifest.model_version, model_version), ("OpenVINO", manifest.openvino, ov.__version__),
        ("Enrich", manifest.enrich, code_version), ("export format", manifest.format, EXPORT_FORMAT))
        if theirs != ours]
    if stale:
        raise ExportMissing(f"the OpenVINO export in {folder} was made for {', '.join(stale)}: {how}")
    missing = [name for name in manifest.files if not (folder / name).is_file()]
    if missing:
        raise ExportMissing(f"the OpenVINO export in {folder} lacks {', '.join(missing)}: {how}")
    return manifest


class OpenVinoBackend(Backend):
    """Every stage compiled by OpenVINO for this CPU.

    An encoder batch runs as two halves on two streams, each with half the threads: small convolutions and
    attention blocks keep one thread each busier than two threads share one op (the README has the figures).
    A lone image takes the other compilation, which gives it every thread, so a single unary call does not
    wait twice as long. The decoder steps are small matrix products and take every thread."""

    def __init__(self, folder: Path, manifest: ExportManifest, colour: ColourFeatures | None,
                 precision: Precision = Precision.FP32, threads: int = 0) -> None:
        from tokenizers import Tokenizer

        ov = import_openvino()
        self.choice = BackendChoice("openvino", precision)
        self.device = "cpu"
        self.manifest = manifest
        threads = threads or cpu_budget()
        core = ov.Core()
        fast = {"INFERENCE_PRECISION_HINT": "bf16" if precision is Precision.BF16 else "f32",
                "INFERENCE_NUM_THREADS": threads}
        exact = {**fast, "INFERENCE_PRECISION_HINT": "f32"}

        if manifest.colour != (colour is not None):
            raise ExportMissing(f"the OpenVINO export in {folder} does not match the bundle's colour features")
        self.folder = folder
        self.streams = 2 if threads >= 2 else 1
        graphs = {"single": ("encoder", fast, "LATENCY"), "heads": ("heads", exact, "LATENCY"),
                  "cross": ("cross", exact, "LATENCY"), "step": ("step", exact, "LATENCY")}
        if self.streams > 1:
            graphs["parallel"] = ("encoder", {**fast, "NUM_STREAMS": self.streams}, "THROUGHPUT")

        def compiled(graph: tuple[str, dict, str]):
            name, config, hint = graph
            return core.compile_model(folder / f"{name}.xml", "CPU", {**config, "PERFORMANCE_HINT": hint})

        # Compiling is mostly single-threaded and releases the GIL: the graphs compile side by side.
        with ThreadPoolExecutor(len(graphs)) as pool:
            compiled_graphs = dict(zip(graphs, pool.map(compiled, graphs.values()), strict=True))
        self.single = compiled_graphs["single"].create_infer_request()
        if self.streams > 1:
            self.parallel = [compiled_graphs["parallel"].create_infer_request() for _ in range(self.streams)]
        self.colour = colour
        self.heads = compiled_graphs["heads"].create_infer_request()
        self.cross = compiled_graphs["cross"].create_infer_request()
        self.step_request = compiled_graphs["step"].create_infer_request()
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokens = Tokens(manifest.start_token, manifest.eos_token, manifest.pad_token,
                             frozenset(manifest.special_tokens))
        self.temperatures = dict(zip(manifest.attributes, manifest.temperatures, strict=True))

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
        return [self.folder / f"{graph}.bin" for graph in self.manifest.graphs]

    # --- the caption's part ---------------------------------------------------------------------------
    def step(self, last: np.ndarray, position: int, keys: np.ndarray, values: np.ndarray, cross_keys: np.ndarray,
             cross_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outputs = self.step_request.infer([last, np.array([position], np.int64), keys, values, cross_keys,
                                           cross_values], share_inputs=True)
        return outputs[0].copy(), outputs[1].copy(), outputs[2].copy()

    def caption(self, tokens: list[np.ndarray], num_beams: int = 1) -> Captions:
        outputs = self.cross.infer([np.ascontiguousarray(np.stack(tokens), dtype=np.float32)])
        cross_keys, cross_values = outputs[0].copy(), outputs[1].copy()
        longest = min(self.manifest.max_new_tokens, self.manifest.max_positions)
        if num_beams > 1:
            generated = beam_search(self.step, cross_keys, cross_values, self.tokens, longest, num_beams)
        else:
            generated = greedy(self.step, cross_keys, cross_values, self.tokens, longest)
        special = self.tokens.special
        texts = [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in generated.tokens]
        counts = [sum(token not in special for token in row) for row in generated.tokens]
        return Captions(texts, generated.confidences(special), counts)
