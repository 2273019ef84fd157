"""In-process measurements (no RPC): each encoder backend and precision, the seed's design against the
shared encoder pass, and the serving pipeline's ceiling."""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from enrich_model.backends import (
    BackendChoice,
    Precision,
    available_backends,
    build_encoder_backend,
    fast_precisions,
)
from enrich_model.bundle import load_bundle
from enrich_model.predict import CaptionMode, ItemOptions, Predictor

BATCH = 8
# Medians of this many alternating rounds: on a shared 2-core machine the fp32 matmul rate alone swung from
# 113 to 185 GFLOP/s within minutes, and three rounds left the ratios at the mercy of one bad one.
ROUNDS = 5


@dataclass
class EncoderRun:
    name: str  # e.g. "openvino/bf16", or "torch/fp32 (contiguous)" for eager as first landed
    images_per_second: float  # median over the rounds
    share_of_fp32_matmul: float  # median over the rounds of (GFLOP/s achieved / fp32 matmul GFLOP/s then)
    label_agreement: float  # top-1, all classified attributes, against eager fp32 on the same images
    worst_attribute_agreement: float
    max_feature_error: float  # largest |difference| of pooled features and tokens from eager fp32


def preprocess_all(bundle, images: list[bytes]) -> np.ndarray:
    return np.stack([bundle.preprocessing.from_bytes(data)[1] for data in images])


def batches(pixels: np.ndarray) -> list[np.ndarray]:
    return [pixels[i:i + BATCH] for i in range(0, len(pixels) - BATCH + 1, BATCH)]


def encoder_speed(encode, pixels: np.ndarray, seconds: float = 2.0) -> float:
    chunks = batches(pixels)
    encode(torch.from_numpy(chunks[0]))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 2 * BATCH:
        pooled, _, _ = encode(torch.from_numpy(chunks[(done // BATCH) % len(chunks)]))
        done += BATCH
    pooled.cpu()  # waits for a GPU to finish
    return done / (time.perf_counter() - started)


def labels_of(predictor: Predictor, pixels: np.ndarray) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for chunk in batches(pixels):
        result = predictor.classify(chunk, [ItemOptions(caption=CaptionMode.SKIP)] * len(chunk))
        for item in result.items:
            for attribute, prediction in item.attributes.items():
                if not prediction.derived:
                    out.setdefault(attribute, []).append(prediction.label)
    return out


def features_of(encode, pixels: np.ndarray) -> torch.Tensor:
    pooled, tokens, _ = encode(torch.from_numpy(pixels[:BATCH]))
    return torch.cat([pooled.flatten(), tokens.flatten()]).float().cpu()


def encoder_variants(bundle_dir: Path, pixels: np.ndarray, agreement_pixels: np.ndarray, threads: int,
                     gflop_per_image: float, matmul_fp32, device: str = "cpu", rounds: int = ROUNDS,
                     progress=print) -> list[EncoderRun]:
    """Every backend and precision this machine has, built first, then timed in alternating rounds with
    the fp32 matmul rate, so that a shared machine's drift hits all of them alike."""
    bundle = load_bundle(bundle_dir, device=device)
    reference = Predictor(bundle)  # eager fp32 as first landed: contiguous memory, no backend
    encoders = {"torch/fp32 (contiguous)": lambda batch: bundle.model.encode(batch.to(device))}
    predictors = {"torch/fp32 (contiguous)": reference}
    kind = device.split(":")[0]
    for name in available_backends(kind):
        for precision in (Precision.FP32, *fast_precisions(kind)):
            choice = BackendChoice(name, precision)
            variant = load_bundle(bundle_dir, device=device)
            encoder = build_encoder_backend(variant.model, choice, variant.preprocessing.input_size,
                                            variant.model_version, bundle_dir, threads)
            encoders[str(choice)], predictors[str(choice)] = encoder.encode, Predictor(variant, encoder=encoder)
    speeds: dict[str, list[float]] = {name: [] for name in encoders}
    shares: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encode in encoders.items():
            speed = encoder_speed(encode, pixels)
            speeds[name].append(speed)
            shares[name].append(speed * gflop_per_image / matmul_fp32())
    reference_labels = labels_of(reference, agreement_pixels)
    reference_features = features_of(encoders["torch/fp32 (contiguous)"], pixels)
    runs = []
    for name, encode in encoders.items():
        labels = labels_of(predictors[name], agreement_pixels)
        per_attribute = [np.mean([a == b for a, b in zip(labels[k], reference_labels[k], strict=True)])
                         for k in reference_labels]
        error = float((features_of(encode, pixels) - reference_features).abs().max())
        runs.append(EncoderRun(name, statistics.median(speeds[name]), statistics.median(shares[name]),
                               float(np.mean(per_attribute)), float(min(per_attribute)), error))
        progress(f"  encoder {name:<24} {runs[-1].images_per_second:6.1f} img/s "
                 f"({runs[-1].share_of_fp32_matmul:.2f} of the fp32 matmul rate), label agreement "
                 f"{runs[-1].label_agreement:.4f} (worst attribute {runs[-1].worst_attribute_agreement:.4f}), "
                 f"largest feature difference {error:.1e}")
    return runs


def seed_design_ratio(bundle_dir: Path, pixels: np.ndarray, caption: CaptionMode, device: str = "cpu",
                      rounds: int = ROUNDS) -> tuple[float, float]:
    """(shared img/s, seed-design img/s), eager fp32 both, alternated, medians: the seed ran one backbone
    pass per attribute (five) plus one for the caption; the shared design runs one for everything."""
    bundle = load_bundle(bundle_dir, device=device)
    predictor = Predictor(bundle)
    chunks = batches(pixels)[:3]
    options = [ItemOptions(caption=caption)] * BATCH
    skip = [ItemOptions(caption=CaptionMode.SKIP)] * BATCH

    def shared(chunk):
        predictor.predict(chunk, options)

    def seed(chunk):
        for _ in range(5):  # one backbone pass per classified attribute
            predictor.classify(chunk, skip)
        if caption is not CaptionMode.SKIP:  # and one more for the caption
            result = predictor.classify(chunk, skip)
            predictor.caption([predictor.caption_job(result, i, options[i]) for i in range(BATCH)])

    speeds: dict[str, list[float]] = {"shared": [], "seed": []}
    shared(chunks[0])
    for _ in range(rounds):
        for name, run in (("shared", shared), ("seed", seed)):
            started = time.perf_counter()
            for chunk in chunks:
                run(chunk)
            speeds[name].append(len(chunks) * BATCH / (time.perf_counter() - started))
    return statistics.median(speeds["shared"]), statistics.median(speeds["seed"])


class InProcessPipeline:
    """The server's own decode pool and pipeline, called in process: the most gRPC could reach."""

    def __init__(self, settings) -> None:
        from enrich_server.app import load_predictor

        self.settings = settings
        model_threads, self.decode_threads = settings.thread_budget
        self.predictor, _ = load_predictor(settings, model_threads)

    def images_per_second(self, images: list[bytes], caption: CaptionMode) -> float:
        return asyncio.run(self._run(images, caption))

    async def _run(self, images: list[bytes], caption: CaptionMode) -> float:
        from enrich_server.pipeline import Pipeline

        settings, preprocessing = self.settings, self.predictor.bundle.preprocessing

        pipeline = Pipeline(self.predictor, settings.max_batch_size, settings.max_delay_ms,
                            settings.caption_batch_size, encoder_wait_ms=settings.encoder_wait_ms)
        pipeline.start()
        loop = asyncio.get_running_loop()
        room = asyncio.Semaphore(settings.max_queue)
        with ThreadPoolExecutor(self.decode_threads) as pool:
            async def one(data: bytes) -> None:
                async with room:
                    with pipeline.decoding():
                        _, pixels = await loop.run_in_executor(pool, preprocessing.from_bytes, data)
                    await pipeline.run(pixels, ItemOptions(caption=caption))

            await asyncio.gather(*(one(d) for d in images[:16]))  # warm
            started = time.perf_counter()
            await asyncio.gather(*(one(d) for d in images))
            elapsed = time.perf_counter() - started
        await pipeline.stop()
        return len(images) / elapsed
