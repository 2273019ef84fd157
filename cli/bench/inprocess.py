"""In-process measurements (no RPC): each encoder backend and precision, a backbone pass per attribute against
the one shared pass, and the server's own service without gRPC (the most a gRPC stream could reach)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enrich.v1 import enrich_pb2
from enrich_contract.wire import caption_mode
from enrich_model.answers import CaptionMode, ItemOptions
from enrich_model.backends import Precision, available_backends, fast_precisions
from enrich_model.bundle import load_bundle
from enrich_model.options import RuntimeOptions
from enrich_model.oracle import generate_captions
from enrich_model.pipeline import EnrichPipeline
from enrich_server.settings import ServerSettings

BATCH = 8
CAPTION_BATCH = ServerSettings.caption_batch_size  # the caption stage's own batches, as the server makes them
# Medians of this many alternating rounds: on a shared 2-core machine the matmul rate alone swings within
# minutes, and three rounds left the ratios at the mercy of one bad one.
ROUNDS = 5
EAGER_REFERENCE = "torch/fp32 (contiguous)"  # eager, in the memory layout training uses: the reference


@dataclass
class EncoderRun:
    name: str  # e.g. "openvino/bf16", or EAGER_REFERENCE
    images_per_second: float  # median over the rounds
    share_of_fp32_matmul: float  # median over the rounds of (GFLOP/s achieved / fp32 matmul GFLOP/s then)
    label_agreement: float  # top-1, all classified attributes, against eager fp32 on the same images
    worst_attribute_agreement: float
    max_feature_error: float  # largest |difference| of pooled features and tokens from eager fp32
    captions_per_second: float = 0.0  # the caption stage alone: greedy, CAPTION_BATCH images (median of rounds)
    caption_tokens: float = 0.0  # tokens per caption in those batches
    caption_agreement: float = 0.0  # greedy captions identical to eager fp32's (the same graphs), on the same images
    generate_agreement: float = 0.0  # greedy captions identical to transformers' generate on eager fp32's tokens
    beam_generate_agreement: float = 0.0  # beam search's (the server's beams) identical to generate's


def preprocess_all(pipeline: EnrichPipeline, images: list[bytes]) -> np.ndarray:
    return np.stack([pipeline.decode(data)[1] for data in images])


def batches(pixels: np.ndarray, size: int = BATCH) -> list[np.ndarray]:
    return [pixels[i:i + size] for i in range(0, len(pixels) - size + 1, size)]


def encoder_speed(pipeline: EnrichPipeline, pixels: np.ndarray, seconds: float = 2.0) -> float:
    chunks = batches(pixels)
    pipeline.encode(chunks[0])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 2 * BATCH:
        pipeline.encode(chunks[(done // BATCH) % len(chunks)])  # its pooled features come back to the CPU
        done += BATCH
    return done / (time.perf_counter() - started)


def caption_speed(pipeline: EnrichPipeline, tokens: list) -> tuple[float, float]:
    """(captions/s, tokens per caption) of one greedy batch from encoder tokens made beforehand: the caption
    stage alone."""
    pipeline.generate(tokens[:2])
    started = time.perf_counter()
    captions = pipeline.generate(tokens)
    return len(tokens) / (time.perf_counter() - started), float(np.mean(captions.token_counts))


@dataclass
class Answers:
    labels: dict[str, list[str]]  # per classified attribute, one label per image
    captions: list[str]  # the decoder's own greedy text, before it is made to agree with the labels
    beam_captions: list[str]  # beam search's


def answers_of(pipeline: EnrichPipeline, pixels: np.ndarray) -> Answers:
    answers = Answers({}, [], [])
    for chunk in batches(pixels):
        encoded = pipeline.encode(chunk)
        for item in pipeline.classify(encoded, [ItemOptions(caption_mode=CaptionMode.SKIP)] * len(chunk)):
            for attribute, prediction in item.attributes.items():
                if not prediction.derived:
                    answers.labels.setdefault(attribute, []).append(prediction.label)
        tokens = list(encoded.tokens)
        answers.captions += pipeline.generate(tokens).texts
        answers.beam_captions += pipeline.generate(tokens, pipeline.caption_beams).texts
    return answers


def oracle_answers(reference: EnrichPipeline, pixels: np.ndarray) -> Answers:
    """transformers' generate (over the tokenizer's whole vocabulary) on the reference's encoder tokens."""
    import torch

    answers = Answers({}, [], [])
    for chunk in batches(pixels):
        tokens = torch.as_tensor(reference.encode(chunk).tokens)
        answers.captions += generate_captions(reference.backend.bundle, tokens).texts
        answers.beam_captions += generate_captions(reference.backend.bundle, tokens, reference.caption_beams).texts
    return answers


def agreement(ours: list[str], reference: list[str]) -> float:
    return float(np.mean([a == b for a, b in zip(ours, reference, strict=True)]))


def features_of(pipeline: EnrichPipeline, pixels: np.ndarray) -> np.ndarray:
    encoded = pipeline.encode(pixels[:BATCH])
    tokens = encoded.tokens if isinstance(encoded.tokens, np.ndarray) else encoded.tokens.float().cpu().numpy()
    return np.concatenate([encoded.pooled.ravel(), tokens.ravel()])


def eager_reference(bundle_dir: Path, device: str) -> EnrichPipeline:
    return EnrichPipeline.eager(load_bundle(bundle_dir, device=device), channels_last=False)


def all_pipelines(bundle_dir: Path, threads: int, device: str) -> dict[str, EnrichPipeline]:
    """Eager fp32 (the reference), then every backend and precision this machine has."""
    pipelines = {EAGER_REFERENCE: eager_reference(bundle_dir, device)}
    kind = device.split(":")[0]
    for name in available_backends(kind):
        for precision in (Precision.FP32, *fast_precisions(kind)):
            options = RuntimeOptions(device=device, backend=name, precision=precision.value, threads=threads)
            pipeline = EnrichPipeline.load(bundle_dir, options)
            pipelines[str(pipeline.backend.choice)] = pipeline
    return pipelines


def encoder_variants(bundle_dir: Path, pixels: np.ndarray, agreement_pixels: np.ndarray, threads: int,
                     gflop_per_image: float, matmul_fp32, device: str = "cpu", rounds: int = ROUNDS,
                     progress=print) -> list[EncoderRun]:
    """Every backend and precision this machine has, built first, then timed in alternating rounds with
    the fp32 matmul rate, so that a shared machine's drift hits all of them alike."""
    pipelines = all_pipelines(bundle_dir, threads, device)
    caption_tokens = {name: list(p.encode(pixels[:CAPTION_BATCH]).tokens) for name, p in pipelines.items()}
    timed: dict[str, dict[str, list[float]]] = {name: {} for name in pipelines}
    for round_number in range(1, rounds + 1):
        for name, pipeline in pipelines.items():
            speed = encoder_speed(pipeline, pixels)
            captions, tokens = caption_speed(pipeline, caption_tokens[name])
            for key, value in (("speed", speed), ("share", speed * gflop_per_image / matmul_fp32()),
                               ("captions", captions), ("tokens", tokens)):
                timed[name].setdefault(key, []).append(value)
        progress(f"  round {round_number}/{rounds} timed")
    progress(f"  labels and greedy captions of {len(agreement_pixels)} images on each against {EAGER_REFERENCE}'s, "
             f"captions (greedy and {pipelines[EAGER_REFERENCE].caption_beams} beams) against transformers' generate "
             "on its tokens:")
    reference = pipelines[EAGER_REFERENCE]
    expected, oracle = answers_of(reference, agreement_pixels), oracle_answers(reference, agreement_pixels)
    reference_features = features_of(reference, pixels)
    runs = []
    for name, pipeline in pipelines.items():
        answers = answers_of(pipeline, agreement_pixels)
        per_attribute = [agreement(answers.labels[k], expected.labels[k]) for k in expected.labels]
        error = float(np.abs(features_of(pipeline, pixels) - reference_features).max())
        median = {key: statistics.median(values) for key, values in timed[name].items()}
        runs.append(EncoderRun(name, median["speed"], median["share"], float(np.mean(per_attribute)),
                               float(min(per_attribute)), error, median["captions"], median["tokens"],
                               agreement(answers.captions, expected.captions),
                               agreement(answers.captions, oracle.captions),
                               agreement(answers.beam_captions, oracle.beam_captions)))
        progress(describe(runs[-1]))
    return runs


def describe(run: EncoderRun) -> str:
    return (f"  {run.name:<24} encoder {run.images_per_second:6.1f} img/s ({run.share_of_fp32_matmul:.2f} of the fp32 "
            f"matmul rate), caption stage {run.captions_per_second:6.1f} captions/s at batch {CAPTION_BATCH}, "
            f"label agreement {run.label_agreement:.4f} (worst attribute {run.worst_attribute_agreement:.4f}), "
            f"captions identical to eager fp32's {run.caption_agreement:.4f}, to generate's "
            f"{run.generate_agreement:.4f} (beam search {run.beam_generate_agreement:.4f}), largest feature "
            f"difference {run.max_feature_error:.1e}")


def decode_stage_ms(pipeline: EnrichPipeline, images: list[bytes], options: ItemOptions) -> float:
    """Milliseconds an image of the server's decode stage (`decode_and_look`) on one thread."""
    for data in images[:4]:
        pipeline.decode_and_look(data, options)
    started = time.perf_counter()
    for data in images:
        pipeline.decode_and_look(data, options)
    return (time.perf_counter() - started) * 1000 / len(images)


def separate_passes_ratio(bundle_dir: Path, pixels: np.ndarray, caption: CaptionMode, device: str = "cpu",
                          rounds: int = ROUNDS) -> tuple[float, float]:
    """(shared img/s, separate img/s), eager fp32 both, alternated, medians: one backbone pass per classified
    attribute (five) plus one for the caption, against the one pass every stage shares."""
    pipeline = eager_reference(bundle_dir, device)
    chunks = batches(pixels)[:3]
    options = [ItemOptions(caption_mode=caption)] * BATCH
    skip = [ItemOptions(caption_mode=CaptionMode.SKIP)] * BATCH

    def shared(chunk):
        pipeline.predict(chunk, options)

    def separate(chunk):
        for _ in range(5):  # one backbone pass per classified attribute
            pipeline.classify(pipeline.encode(chunk), skip)
        if caption.needs_decoder:  # and one more for the caption
            pipeline.caption([item.caption_job for item in pipeline.classify(pipeline.encode(chunk), options)])

    speeds: dict[str, list[float]] = {"shared": [], "separate": []}
    shared(chunks[0])
    for _ in range(rounds):
        for name, run in (("shared", shared), ("separate", separate)):
            started = time.perf_counter()
            for chunk in chunks:
                run(chunk)
            speeds[name].append(len(chunks) * BATCH / (time.perf_counter() - started))
    return statistics.median(speeds["shared"]), statistics.median(speeds["separate"])


class InProcessServer:
    """The server's own service (admission, decode pool, batched stages) and stream calls, run in process
    exactly as the gRPC servicer runs them, minus gRPC: the most a gRPC stream could reach."""

    def __init__(self, settings) -> None:
        from enrich_server.in_process import InProcessService

        self.service = InProcessService(settings)

    def images_per_second(self, images: list[bytes], caption: CaptionMode, streams: int = 4) -> float:
        mode = caption_mode(caption.value)
        self._all_answered(self.service.answer_streams([requests(images[i:16:streams], mode)
                                                        for i in range(streams)]))  # warm
        started = time.perf_counter()
        self._all_answered(self.service.answer_streams([requests(images[i::streams], mode) for i in range(streams)]))
        return len(images) / (time.perf_counter() - started)

    @staticmethod
    def _all_answered(streams: list[list[enrich_pb2.EnrichResponse]]) -> None:
        if any(answer.status.code for answers in streams for answer in answers):
            raise RuntimeError("the in-process stream did not answer every image")

    def close(self) -> None:
        self.service.close()


def requests(images: list[bytes], mode: int) -> list[enrich_pb2.EnrichRequest]:
    return [enrich_pb2.EnrichRequest(request_id=str(n), image=data, caption_mode=mode) for n, data in enumerate(images)]
