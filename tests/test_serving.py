"""Serving speed features on a tiny bundle: backend parity, the OpenVINO export cache, the response cache and
the Prometheus endpoint, through real gRPC where a server is involved."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from enrich_client import EnrichClient
from enrich_model.backends import (
    BackendChoice,
    BackendError,
    Precision,
    available_backends,
    choose_backend,
    fast_precisions,
)

from .conftest import LoopbackServer

VARIANTS = [BackendChoice(name, precision) for name in available_backends("cpu")
            for precision in (Precision.FP32, *fast_precisions("cpu"))]


def catalogue_pixels(pipeline, catalogue_dir: Path, count: int = 48) -> np.ndarray:
    paths = sorted((catalogue_dir / "images").glob("*.jpg"))[:count]
    return np.stack([pipeline.decode(p.read_bytes())[1] for p in paths])


def eager_pipeline(bundle_dir: Path):
    from enrich_model.bundle import load_bundle
    from enrich_model.pipeline import EnrichPipeline

    return EnrichPipeline.eager(load_bundle(bundle_dir), channels_last=False)


def classify(pipeline, pixels: np.ndarray):
    """(labels per image, raw logits per attribute)."""
    from enrich_model.answers import ItemOptions

    encoded = pipeline.encode(pixels)
    items = pipeline.classify(encoded, [ItemOptions()] * len(pixels))
    return [tuple(item.attributes[a].label for a in sorted(item.attributes)) for item in items], \
        pipeline.logits(encoded)


@pytest.fixture(scope="module")
def pixels_and_reference(bundle_dir: Path, catalogue_dir: Path):
    reference = eager_pipeline(bundle_dir)  # plain eager, in the layout training uses
    pixels = catalogue_pixels(reference, catalogue_dir)
    return pixels, classify(reference, pixels)


@pytest.mark.parametrize("choice", VARIANTS, ids=str)
def test_every_available_backend_gives_the_labels_of_eager_torch(choice, bundle_dir: Path, tmp_path: Path,
                                                                  pixels_and_reference):
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline

    pixels, (reference_labels, reference_logits) = pixels_and_reference
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)  # the OpenVINO export is cached beside the bundle
    pipeline = EnrichPipeline.load(copy, RuntimeOptions(device="cpu", backend=choice.name,
                                                        precision=choice.precision.value))
    assert pipeline.backend.choice == choice
    labels, logits = classify(pipeline, pixels)
    agreement = np.mean([a == b for a, b in zip(labels, reference_labels, strict=True)])
    # Serving sends batches of any size up to --max-batch-size: the same answers at 1 and 5.
    by_parts = [label for part in (pixels[:1], pixels[1:6]) for label in classify(pipeline, part)[0]]
    same = sum(a == b for a, b in zip(by_parts, labels[:6], strict=True))
    assert same == 6 if choice.precision is Precision.FP32 else same >= 5
    logit_error = max(float(np.abs(logits[a] - reference_logits[a]).max()) for a in reference_logits)
    print(f"\n{choice}: label agreement {agreement:.3f}, largest logit difference {logit_error:.2e}")
    if choice.precision is Precision.FP32:
        assert agreement == 1.0 and logit_error < 1e-3
    else:  # reduced precision moves near-ties only: every answer eager gives by a clear margin stays
        clear = agreed = 0
        for attribute, reference in reference_logits.items():
            top2 = -np.sort(-reference, axis=-1)[:, :2]
            sure = top2[:, 0] - top2[:, 1] > 0.1  # bf16 moved these logits by < 0.01
            clear += int(sure.sum())
            agreed += int((reference.argmax(-1) == logits[attribute].argmax(-1))[sure].sum())
        assert agreed == clear >= len(reference_logits) * len(pixels) // 2


def test_backend_choice_refuses_what_the_machine_cannot_do():
    assert choose_backend("torch", "fp32", "cpu") == BackendChoice("torch", Precision.FP32)
    auto = choose_backend("auto", "auto", "cpu")
    assert auto.name == ("openvino" if "openvino" in available_backends("cpu") else "torch")
    assert auto.precision is (fast_precisions("cpu") or [Precision.FP32])[0]
    with pytest.raises(BackendError, match="fp16"):
        choose_backend("torch", "fp16", "cpu")
    if not fast_precisions("cpu"):
        with pytest.raises(BackendError, match="no hardware support"):
            choose_backend("torch", "bf16", "cpu")


def test_a_repeated_image_is_answered_from_the_cache_without_the_model(bundle_dir: Path, catalogue_dir: Path):
    server = LoopbackServer(bundle_dir, cache_mb=1)
    server.load()
    try:
        pipeline = server.server.service.model.batched
        data = sorted((catalogue_dir / "images").glob("*.jpg"))[0].read_bytes()
        with EnrichClient(server.target, timeout=60) as client:
            first = client.enrich(data, "first", 3, "generate")
            predicted = pipeline.predicted
            again = client.enrich(data, "again", 3, "generate")
            assert pipeline.predicted == predicted  # the model did not run
            assert again.timings.cache_hit and not first.timings.cache_hit
            assert again.request_id == "again" and again.metadata == first.metadata
            other_options = client.enrich(data, "other", 5, "generate")  # options are part of the key
            assert not other_options.timings.cache_hit and pipeline.predicted == predicted + 1
            info = client.model_info()
            assert (info.load.cache_hits, info.load.cache_misses) == (1, 2)
            assert info.runtime.cache_max_bytes == 1024 * 1024
            assert str(choose_backend("auto", "auto", "cpu")) == f"{info.runtime.backend}/{info.runtime.precision}"
            assert info.runtime.model_threads >= 1 and info.runtime.decode_threads >= 1
    finally:
        server.close()


def test_the_metrics_endpoint_shows_stage_histograms_after_traffic(bundle_dir: Path, catalogue_dir: Path):
    server = LoopbackServer(bundle_dir, cache_mb=0)
    server.load()
    try:
        images = [p.read_bytes() for p in sorted((catalogue_dir / "images").glob("*.jpg"))[:6]]
        with EnrichClient(server.target, timeout=60) as client:
            answers = list(client.enrich_stream(((str(n), d) for n, d in enumerate([*images, b"junk"])),
                                                caption_mode="generate"))
            client.enrich(images[0], caption_mode="skip")
        assert sum(1 for a in answers if a.status.code == 0) == 6
        port = server.server.ports['metrics_port']
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.close()
    runtime = server.server.service.model.runtime
    scraped = samples(text)
    where = {"backend": runtime.backend, "precision": runtime.precision}
    for stage in ("decode", "queue", "encoder", "heads", "caption", "total"):
        count = scraped["enrich_stage_seconds_count", frozenset({"stage": stage, **where}.items())]
        assert count == (6 if stage == "caption" else 7), stage
    assert scraped["enrich_batch_size_count", frozenset({"stage": "encoder", **where}.items())] >= 1
    items = {labels: value for (name, labels), value in scraped.items() if name == "enrich_items_total"}
    assert items == {
        frozenset({"method": "EnrichStream", "code": "OK", "reason": ""}.items()): 6,
        frozenset({"method": "EnrichStream", "code": "INVALID_ARGUMENT", "reason": "IMAGE_UNDECODABLE"}.items()): 1,
        frozenset({"method": "Enrich", "code": "OK", "reason": ""}.items()): 1,
    }
    assert scraped["enrich_queue_depth", frozenset({"stage": "encoder"}.items())] == 0
    assert scraped["enrich_in_flight", frozenset()] == 0
    assert scraped["enrich_runtime_info", frozenset({**where, "device": "cpu",
                                                     "model_version": runtime_version(server)}.items())] == 1


def runtime_version(server: LoopbackServer) -> str:
    return server.server.service.model.pipeline.model_version


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
