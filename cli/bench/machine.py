"""What the machine can do: CPU flags, matmul GFLOP/s at fp32 and bf16, and an encoder's cost per image."""

from __future__ import annotations

import time

import torch

from enrich_model.backends import BF16_CPU_FLAGS, cpu_budget, cpu_flags

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", *BF16_CPU_FLAGS, "amx_tile", "amx_int8")


def machine_flags() -> dict:
    flags = cpu_flags()
    return {"cpu_budget": cpu_budget(), "torch_threads": torch.get_num_threads(),
            "flags": [f for f in SIMD_FLAGS if f in flags]}


def matmul_gflops(dtype: torch.dtype, size: int = 1024, seconds: float = 1.5, device: str = "cpu") -> float:
    """Sustained GEMM rate: the machine's ceiling for a model made of matmuls and convolutions."""
    size = 8192 if device.startswith("cuda") else size  # a GPU needs a large GEMM to be busy
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * size ** 3 * runs / (time.perf_counter() - started) / 1e9


def reduced_precision_gflops(device: str) -> dict[str, float]:
    """GEMM GFLOP/s at each reduced precision this device runs in hardware (fp32 is timed between the encoder
    rounds instead)."""
    from enrich_model.backends import fast_precisions

    rates = {}
    for precision in fast_precisions(device):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision.value]
        matmul_gflops(dtype, seconds=0.5, device=device)  # the first calls pick kernels
        rates[precision.value] = matmul_gflops(dtype, device=device)
    return rates


def encoder_gflop(model, input_size: tuple[int, int]) -> float:
    """FLOPs of one image through the backbone (2 per multiply-add), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.zeros(1, 3, *input_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.encoder.features(pixels)
    return counter.get_total_flops() / 1e9


def caption_gflop(bundle, vocabulary, tokens: int) -> list[float]:
    """GFLOP of one caption through the caption graphs over `vocabulary` (None: the tokenizer's whole one), counted
    by torch: element t is a caption of t + 1 tokens (the cross graph, then t + 1 steps), for t < `tokens`."""
    from torch.utils.flop_counter import FlopCounterMode

    from enrich_model.graphs import CaptionCross, CaptionDecoder, CaptionStep

    captioner = bundle.model.captioner
    decoder = CaptionDecoder(captioner, vocabulary)
    device = next(captioner.parameters()).device
    pixels = torch.zeros(1, 3, *bundle.preprocessing.input_size, device=device)
    step, counted, totals = CaptionStep(decoder), 0, []
    with torch.inference_mode():
        image = bundle.model.encoder.features(pixels)[1]
        with FlopCounterMode(display=False) as counter:
            cross_keys, cross_values = CaptionCross(decoder)(image)
        counted = counter.get_total_flops()
        chosen = torch.zeros(1, 1, dtype=torch.long, device=device)
        keys, values = cross_keys[:, :, :, :0], cross_values[:, :, :, :0]
        for position in range(tokens):
            with FlopCounterMode(display=False) as counter:
                _, chosen, keys, values = step(chosen[:, :1], torch.full((1, 1), position, device=device), keys,
                                               values, cross_keys, cross_values)
            counted += counter.get_total_flops()
            totals.append(counted / 1e9)
    return totals
