"""Where the one encoder pass runs: eager torch (the reference) or OpenVINO, at a precision the hardware has.

    pixels (B, 3, H, W) -> EncoderBackend.encode -> Encoded: pooled (B, C), tokens (B, h*w, C), colour (B, F)

A backend runs the backbone; the colour features are computed the same way for every backend
(`model.encode`). Every backend returns fp32 tensors on the model's device, so the heads and the caption
decoder (torch) read its output unchanged. What a machine can do is detected at start-up, never assumed: bf16 runs on
CPUs that have it in hardware (AVX-512 BF16 or AMX), and on CUDA devices that support it.

The OpenVINO export is made once and cached beside the bundle (`BUNDLE/openvino/`), keyed by the model
version and the OpenVINO version; a later start reads it instead of converting again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .model import ColourFeatures, Encoded, TinyVitEncoder, encode
from .options import BackendError

if TYPE_CHECKING:
    from .model import EnrichModel

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


def resolve_device(device: str) -> str:
    """`auto`: the first CUDA device when torch sees one, else the CPU. Raises BackendError for a device this
    machine does not have."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
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
        index = torch.device(device).index or 0
        with torch.cuda.device(index):  # bf16 in hardware (Ampere and later), not emulated
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return [Precision.BF16, Precision.FP16] if native_bf16 else [Precision.FP16]
    return [Precision.BF16] if cpu_flags() & set(BF16_CPU_FLAGS) else []


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def available_backends(device: str) -> list[str]:
    return ["torch", "openvino"] if device == "cpu" and openvino_installed() else ["torch"]


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


# --- backends ----------------------------------------------------------------------------------------
class EncoderBackend:
    """Runs the backbone (`backbone`); `encode` adds the colour features of the same pixels, alike for all."""

    choice: BackendChoice

    def __init__(self, colour: ColourFeatures | None) -> None:
        self.colour = colour

    def backbone(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (B, C), tokens (B, h*w, C)), fp32."""
        raise NotImplementedError

    def encode(self, pixels: torch.Tensor) -> Encoded:
        return encode(self.backbone, self.colour, pixels)


class TorchEncoder(EncoderBackend):
    """Eager PyTorch: channels_last memory layout (faster convolutions on CPU), autocast for bf16/fp16.

    `compile=True` runs the backbone through torch.compile (dynamic batch size, so one compilation
    serves every batch): worth it on GPUs, where it fuses the many small kernels; the first batch then
    takes minutes, which the server's warm-up absorbs before it reports SERVING. `channels_last=False`
    keeps the layout training uses (the benchmark's reference)."""

    def __init__(self, encoder: TinyVitEncoder, colour: ColourFeatures | None, precision: Precision = Precision.FP32,
                 compile: bool = False, channels_last: bool = True) -> None:
        super().__init__(colour)
        self.choice = BackendChoice("torch", precision)
        self.device = next(encoder.parameters()).device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        encoder.to(memory_format=self.memory_format)
        self.dtype = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(precision)
        self.features = torch.compile(encoder.features, dynamic=True) if compile else encoder.features

    def backbone(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            pooled, tokens = self.features(pixels.contiguous(memory_format=self.memory_format))
        return pooled.float(), tokens.float()

    def encode(self, pixels: torch.Tensor) -> Encoded:
        return super().encode(pixels.to(self.device, non_blocking=True))


class _Backbone(nn.Module):
    """The graph OpenVINO converts: the backbone pass only."""

    def __init__(self, encoder: TinyVitEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.features(pixel_values)


def import_openvino():
    """openvino, with its converter's usage telemetry off.

    Unless a consent file says otherwise, OpenVINO's model converter reports usage to Google Analytics from
    forked processes. A server must not phone home (nor fork under gRPC's threads): with its telemetry
    package blocked, the converter falls back to its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def save_export(ov, graph, stamp: dict, cache_dir: Path) -> None:
    """Written beside the final folder and renamed into place, stamp last: servers sharing a bundle never
    read a half-written export."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".openvino-", dir=cache_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the export from a server running as another user
    try:
        ov.save_model(graph, staging / "encoder.xml", compress_to_fp16=False)  # fp32 weights: `fp32` stays exact
        (staging / "export.json").write_text(json.dumps(stamp, indent=2) + "\n")
        if cache_dir.exists():
            shutil.rmtree(cache_dir, ignore_errors=True)
        os.replace(staging, cache_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class OpenVinoEncoder(EncoderBackend):
    """The backbone compiled by OpenVINO for this CPU; bf16 via its inference precision hint.

    A batch runs as two halves on two streams, each with half the threads: small convolutions and
    attention blocks keep one thread each busier than two threads share one op (the README has the
    figures). A lone image takes the other compilation, which gives it every thread, so a single unary
    call does not wait twice as long."""

    def __init__(self, encoder: TinyVitEncoder, colour: ColourFeatures | None, input_size: tuple[int, int],
                 model_version: str, precision: Precision = Precision.FP32, cache_dir: Path | None = None,
                 threads: int = 0) -> None:
        ov = import_openvino()

        super().__init__(colour)
        self.choice = BackendChoice("openvino", precision)
        core = ov.Core()
        graph = self._exported(ov, core, encoder, input_size, model_version, cache_dir)
        threads = threads or cpu_budget()
        self.streams = 2 if threads >= 2 else 1
        base = {"INFERENCE_PRECISION_HINT": "bf16" if precision is Precision.BF16 else "f32",
                "INFERENCE_NUM_THREADS": threads}
        latency = core.compile_model(graph, "CPU", {**base, "PERFORMANCE_HINT": "LATENCY"})
        self.single = latency.create_infer_request()
        if self.streams > 1:
            throughput = core.compile_model(graph, "CPU", {**base, "PERFORMANCE_HINT": "THROUGHPUT",
                                                           "NUM_STREAMS": self.streams})
            self.parallel = [throughput.create_infer_request() for _ in range(self.streams)]

    @staticmethod
    def _exported(ov, core, encoder: TinyVitEncoder, input_size: tuple[int, int], model_version: str,
                  cache_dir: Path | None):
        from enrich_model import __version__ as code_version

        stamp = {"model_version": model_version, "openvino": ov.__version__, "input_size": list(input_size),
                 "enrich": code_version}
        if cache_dir:
            try:
                if (cache_dir / "export.json").exists():
                    if json.loads((cache_dir / "export.json").read_text()) == stamp:
                        return core.read_model(cache_dir / "encoder.xml")
                    log.info("the OpenVINO export in %s is for another model or version: exporting again",
                             cache_dir)
            except Exception as error:  # unreadable, torn or not ours to read: make it again
                log.warning("the OpenVINO export in %s cannot be read (%s): exporting again", cache_dir, error)
        started = time.perf_counter()
        height, width = input_size
        example = torch.zeros(2, 3, height, width)
        # TinyViT's padding checks are shape-dependent Python branches; at the bundle's fixed input size the
        # traced branch is the right one for every image, so the tracer's warnings say nothing here.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch deprecating the tracer OpenVINO converts with
            graph = ov.convert_model(_Backbone(encoder).eval(), example_input=example,
                                     input=[ov.PartialShape([-1, 3, height, width])])
        log.info("exported the encoder to OpenVINO in %.1f s", time.perf_counter() - started)
        if cache_dir:
            try:
                save_export(ov, graph, stamp, cache_dir)
            except OSError as error:  # a read-only bundle still serves; it just converts at each start
                log.warning("cannot cache the OpenVINO export in %s (%s): it will be made again next start "
                            "(`enrich export` writes it ahead of time)", cache_dir, error.strerror or error)
        return graph

    def backbone(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = pixels.numpy()
        if self.streams == 1 or len(array) < 2:
            outputs = self.single.infer([array], share_inputs=True)
            return torch.from_numpy(outputs[0].copy()), torch.from_numpy(outputs[1].copy())
        parts = [np.ascontiguousarray(part) for part in np.array_split(array, self.streams)]  # alive until done
        started = []
        try:
            for request, part in zip(self.parallel, parts, strict=True):
                request.start_async([part], share_inputs=True)
                started.append(request)
        finally:  # even when one fails, none may still read `parts` (shared, not copied) after we return
            for request in started:
                request.wait()
        pooled, tokens = (torch.from_numpy(np.concatenate([r.get_output_tensor(i).data for r in self.parallel]))
                          for i in range(2))
        return pooled, tokens


def build_encoder_backend(model: EnrichModel, choice: BackendChoice, input_size: tuple[int, int],
                          model_version: str, bundle_path: Path | None = None, threads: int = 0,
                          compile: bool = False) -> EncoderBackend:
    if choice.name == "openvino":
        cache = bundle_path / "openvino" if bundle_path else None
        return OpenVinoEncoder(model.encoder, model.colour, input_size, model_version, choice.precision, cache,
                               threads)
    return TorchEncoder(model.encoder, model.colour, choice.precision, compile)
