"""In-process measurements (no RPC): each encoder backend and precision, the seed's design against the
shared encoder pass, and the serving pipeline's ceiling."""

from __future__ import annotations

import asyncio
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
from enrich_model.decode import decode_image
from enrich_model.predict import CaptionMode, ItemOptions, Predictor

BATCH = 8


@dataclass
class EncoderRun:
    name: str  # e.g. "openvino/bf16", or "torch/fp32 (contiguous)" for eager as first landed
    images_per_second: float
    label_agreement: float  # top-1, all classified attributes, against eager fp32 on the same images
    worst_attribute_agreement: float
    max_feature_error: float  # largest |difference| of pooled features and tokens from eager fp32


def preprocess_all(bundle, images: list[bytes]) -> np.ndarray:
    target = bundle.preprocessing.decode_target
    return np.stack([bundle.preprocessing(decode_image(d, target=target).image) for d in images])


def batches(pixels: np.ndarray) -> list[np.ndarray]:
    return [pixels[i:i + BATCH] for i in range(0, len(pixels) - BATCH + 1, BATCH)]


def encoder_speed(encode, pixels: np.ndarray, seconds: float = 4.0) -> float:
    chunks = batches(pixels)
    for chunk in chunks[:2]:
        encode(torch.from_numpy(chunk))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 4 * BATCH:
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
                     device: str = "cpu", progress=print) -> list[EncoderRun]:
    bundle = load_bundle(bundle_dir, device=device)
    reference = Predictor(bundle)  # eager fp32 as first landed: contiguous memory, no backend

    def eager(batch: torch.Tensor):
        return bundle.model.encode(batch.to(device))

    reference_labels = labels_of(reference, agreement_pixels)
    reference_features = features_of(eager, pixels)
    runs = [EncoderRun("torch/fp32 (contiguous)", encoder_speed(eager, pixels), 1.0, 1.0, 0.0)]
    progress(f"  encoder {runs[0].name}: {runs[0].images_per_second:.1f} img/s")
    kind = device.split(":")[0]
    for name in available_backends(kind):
        for precision in (Precision.FP32, *fast_precisions(kind)):
            choice = BackendChoice(name, precision)
            bundle = load_bundle(bundle_dir, device=device)
            encoder = build_encoder_backend(bundle.model, choice, bundle.preprocessing.input_size,
                                            bundle.model_version, bundle_dir, threads)
            speed = encoder_speed(encoder.encode, pixels)
            labels = labels_of(Predictor(bundle, encoder=encoder), agreement_pixels)
            per_attribute = [np.mean([a == b for a, b in zip(labels[k], reference_labels[k], strict=True)])
                             for k in reference_labels]
            error = float((features_of(encoder.encode, pixels) - reference_features).abs().max())
            runs.append(EncoderRun(str(choice), speed, float(np.mean(per_attribute)), float(min(per_attribute)),
                                   error))
            progress(f"  encoder {choice}: {speed:.1f} img/s, agreement {runs[-1].label_agreement:.4f}")
    return runs


def seed_design_ratio(bundle_dir: Path, pixels: np.ndarray, caption: CaptionMode,
                      device: str = "cpu") -> tuple[float, float]:
    """(shared img/s, seed-design img/s), eager fp32 both: the seed ran one backbone pass per attribute
    (five) plus one for the caption; the shared design runs one for everything."""
    bundle = load_bundle(bundle_dir, device=device)
    predictor = Predictor(bundle)
    chunks = batches(pixels)[:4]
    options = [ItemOptions(caption=caption)] * BATCH

    def shared(chunk):
        predictor.predict(chunk, options)

    def seed(chunk):
        for _ in range(5):  # one backbone pass per classified attribute
            predictor.classify(chunk, [ItemOptions(caption=CaptionMode.SKIP)] * BATCH)
        if caption is not CaptionMode.SKIP:  # and one more for the caption
            result = predictor.classify(chunk, [ItemOptions(caption=CaptionMode.SKIP)] * BATCH)
            predictor.caption([predictor.caption_job(result, i, options[i]) for i in range(BATCH)])

    speeds = []
    for run in (shared, seed):
        run(chunks[0])
        started = time.perf_counter()
        for chunk in chunks:
            run(chunk)
        speeds.append(len(chunks) * BATCH / (time.perf_counter() - started))
    return speeds[0], speeds[1]


def pipeline_ceiling(settings, images: list[bytes], caption: CaptionMode) -> float:
    """img/s of the server's own decode pool and pipeline, called in process: the most gRPC could reach."""
    from enrich_server.app import load_predictor
    from enrich_server.pipeline import Pipeline

    model_threads, decode_threads = settings.thread_budget
    predictor, _ = load_predictor(settings, model_threads)
    preprocessing = predictor.bundle.preprocessing

    def decode(data: bytes) -> np.ndarray:
        return preprocessing(decode_image(data, target=preprocessing.decode_target).image)

    async def run() -> float:
        pipeline = Pipeline(predictor, settings.max_batch_size, settings.max_delay_ms, settings.caption_batch_size)
        pipeline.start()
        loop = asyncio.get_running_loop()
        room = asyncio.Semaphore(settings.max_queue)
        with ThreadPoolExecutor(decode_threads) as pool:
            async def one(data: bytes) -> None:
                async with room:
                    pixels = await loop.run_in_executor(pool, decode, data)
                    await pipeline.run(pixels, ItemOptions(caption=caption))

            await asyncio.gather(*(one(d) for d in images[:16]))  # warm
            started = time.perf_counter()
            await asyncio.gather(*(one(d) for d in images))
            elapsed = time.perf_counter() - started
        await pipeline.stop()
        return len(images) / elapsed

    return asyncio.run(run())
