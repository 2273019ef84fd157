"""Where the model runs: eager torch (the reference, GPUs, training) or OpenVINO (CPUs, without torch), at a
precision the hardware has. A backend runs the model's three numeric parts for the pipeline:

    pixels (B, 3, H, W) -> Backend.encode -> Encoded: pooled (B, C) and colour (B, F) in NumPy, tokens (B, h*w, C)
                                                in the backend's own arrays
    Encoded -> Backend.logits -> raw logits per attribute (calibrated in the pipeline, alike for all)
    tokens of some images -> Backend.caption -> Captions (greedy or beam search)

`torch_backend.py` and `openvino_backend.py` hold the two; this module chooses between them and imports
neither torch nor openvino itself. What a machine can do is detected at start-up, never assumed: bf16 runs on
CPUs that have it in hardware (AVX-512 BF16 or AMX), and on CUDA devices that support it. The OpenVINO
backend runs an export of the bundle's graphs (`export_store.py` says where it is found and how it is checked);
where none serves the bundle and torch is installed, one is made at start-up, into the export cache.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .encoding import Encoded
from .options import BackendError

if TYPE_CHECKING:
    from .bundle_info import BundleInfo
    from .search import DecoderRun

log = logging.getLogger("enrich.backends")

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class Precision(str, Enum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


# --- what the machine has ----------------------------------------------------------------------------
def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_budget(cgroup: Path = Path("/sys/fs/cgroup"), affinity: int | None = None) -> int:
    """CPUs this process may use: the cgroup quota (a container's CPU limit) and affinity, not the host's count.
    A fractional quota rounds down, but never below one CPU."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = affinity
    with contextlib.suppress(OSError, ValueError):  # cgroup v2: "max 100000" or "250000 100000"
        quota, period = (cgroup / "cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(float(quota) / float(period))))
    with contextlib.suppress(OSError, ValueError):  # cgroup v1: -1 when unlimited
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            count = min(count, max(1, quota // period))
    return max(1, count)


def gpu_present() -> bool:
    """A GPU driver's device nodes (NVIDIA, or AMD's ROCm, which torch also calls cuda): without them torch
    cannot see a GPU, so a CPU machine need not import torch to find that out."""
    return any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def resolve_device(device: str) -> str:
    """`auto`: the first CUDA device when torch sees one, else the CPU. Raises BackendError for a device this
    machine does not have. Imports torch only where a GPU could be."""
    if device == "cpu":
        return device
    if device == "auto":
        if not (gpu_present() and torch_installed()):
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch_installed():
        raise BackendError(f"device {device!r} needs torch, which is not installed here: install the serve "
                           "extra, or serve on cpu")
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise BackendError(f"device {device!r} is not one torch knows: use auto, cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise BackendError(f"device {device!r}: Enrich runs on cpu or cuda")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise BackendError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s) here")
    return device


def fast_precisions(device: str) -> list[Precision]:
    """Reduced precisions this device runs in hardware, fastest first."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        with torch.cuda.device(index):  # bf16 in hardware (Ampere and later), not emulated
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return [Precision.BF16, Precision.FP16] if native_bf16 else [Precision.FP16]
    return [Precision.BF16] if cpu_flags() & set(BF16_CPU_FLAGS) else []


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def available_backends(device: str) -> list[str]:
    installed = ["torch"] if torch_installed() else []
    return [*installed, "openvino"] if device == "cpu" and openvino_installed() else installed


@dataclass(frozen=True)
class BackendChoice:
    name: str  # torch | openvino
    precision: Precision

    def __str__(self) -> str:
        return f"{self.name}/{self.precision.value}"


def choose_backend(backend: str, precision: str, device: str, compile: bool = False) -> BackendChoice:
    """Resolve `auto` for both: OpenVINO on CPU when installed (torch when asked to compile), the fastest
    precision the hardware has."""
    available = available_backends(device)
    if not available:
        raise BackendError("neither torch nor openvino is installed here: install the serve-cpu extra (CPUs) or "
                           "the serve extra (GPUs)")
    if backend == "torch" and not torch_installed():
        raise BackendError("backend 'torch' needs torch, which is not installed here (the serve-cpu extra has "
                           "none): install the serve extra, or use --backend openvino")
    if backend == "auto":
        backend = "openvino" if "openvino" in available and not compile else "torch"
    elif backend not in available:
        why = "it is not installed (pip install openvino)" if backend == "openvino" and device == "cpu" \
            else f"it does not run on {device}"
        raise BackendError(f"backend {backend!r} is not available here: {why}; available: {', '.join(available)}")
    if compile and backend != "torch":
        raise BackendError(f"--compile applies to the torch backend, not {backend}: add --backend torch")
    fast = fast_precisions(device)
    if precision == "auto":
        chosen = fast[0] if fast else Precision.FP32
    else:
        chosen = Precision(precision)
        if chosen is not Precision.FP32 and chosen not in fast:
            raise BackendError(f"precision {chosen.value} has no hardware support on {device} here "
                               f"(supported: {', '.join(p.value for p in [Precision.FP32, *fast])})")
        if backend == "openvino" and chosen is Precision.FP16:
            raise BackendError("the OpenVINO CPU backend runs fp32 or bf16")
    return BackendChoice(backend, chosen)


# --- the backends' common shape ----------------------------------------------------------------------
class Backend:
    """Runs the model's numeric parts; everything else (calibration, labels, audit, caption editing) is the
    pipeline's, alike for every backend."""

    choice: BackendChoice
    device: str
    temperatures: dict[str, float]  # per attribute: calibrated probabilities are softmax(logits / temperature)
    candidates: int  # next-token candidates per caption row: beam search takes at most half as many beams

    def encode(self, pixels: np.ndarray) -> Encoded:
        raise NotImplementedError

    def logits(self, encoded: Encoded) -> dict[str, np.ndarray]:
        """Raw (uncalibrated) logits per classified attribute, fp32."""
        raise NotImplementedError

    def start_captions(self, tokens: list) -> DecoderRun:
        """Some images' encoder tokens (rows of Encoded.tokens) -> the run that writes their captions
        (`search.generate`), with their cross-attention keys and values."""
        raise NotImplementedError

    def release_loading_memory(self) -> None:
        """Called once the first passes have run (EnrichPipeline.warm): give back what only loading needed."""


def needs_torch(bundle: BundleInfo, choice: BackendChoice, cache: Path | None) -> bool:
    """Whether serving `choice` imports torch: the torch backend does, and OpenVINO does to make an export when
    none serves the bundle. Without torch, that raises ExportMissing, which says how to make one; a changed
    export file raises ExportDamaged (its files are checked here, before the server opens a port)."""
    if choice.name == "torch":
        return True
    from .export_store import ExportMissing, find_export

    try:
        find_export(bundle.path, bundle.config, cache)
    except ExportMissing:
        if torch_installed():
            return True
        raise
    return False


def load_backend(bundle: BundleInfo, choice: BackendChoice, device: str, threads: int, compile: bool = False,
                 cache: Path | None = None) -> Backend:
    """`bundle` on `choice`. OpenVINO runs the export that serves the bundle, its files checked first; where none
    does and torch is installed, one is made now, into the export cache (`cache`, or the default)."""
    if choice.name == "openvino":
        from .colour import colour_features
        from .export_store import ExportMissing, find_export
        from .openvino_backend import OpenVinoBackend

        try:
            folder, manifest = find_export(bundle.path, bundle.config, cache)
        except ExportMissing as missing:
            if not torch_installed():
                raise
            log.info("%s; exporting now, into the export cache", missing)
            from .export import export_to_cache

            export_to_cache(bundle, cache)
            folder, manifest = find_export(bundle.path, bundle.config, cache)
        colour = colour_features(bundle.config.heads, bundle.preprocessing)
        return OpenVinoBackend(folder, manifest, colour, choice.precision, threads)
    from .torch_backend import TorchBackend

    return TorchBackend.load(bundle.path, device, choice, compile, bundle.config)
