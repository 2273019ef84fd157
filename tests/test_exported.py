"""The OpenVINO export against eager torch on the same bundle, and a CPU server that runs it without torch.

Parity runs on a bundle of random weights (small shapes): its decoder writes long captions of varied tokens,
which exercises every step of the key/value cache, where a trained tiny decoder stops at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enrich_model.backends import available_backends

from .conftest import TINY_BACKBONE

pytestmark = pytest.mark.skipif("openvino" not in available_backends("cpu"), reason="openvino is not installed")

TOKENS = 24  # past 16: OpenVINO once returned wrong attention from there on (export.attend)


@pytest.fixture(scope="module")
def random_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from enrich_model.model import DecoderSpec
    from enrich_trainer.random_bundle import random_bundle

    out = tmp_path_factory.mktemp("random-bundle")
    random_bundle(out, "tiny_vit_5m_224", json.loads(TINY_BACKBONE), 32, DecoderSpec(2, 32, 2, 64), 300,
                  max_new_tokens=TOKENS, seed=1)
    return out


def pixels_of(pipeline, catalogue_dir: Path, count: int = 24) -> np.ndarray:
    paths = sorted((catalogue_dir / "images").glob("*.jpg"))[:count]
    return np.stack([pipeline.decode(p.read_bytes())[1] for p in paths])


def predictions(pipeline, pixels: np.ndarray, mode) -> tuple[list, list[str], list[float]]:
    from enrich_model.answers import ItemOptions

    items = pipeline.predict(pixels, [ItemOptions(caption_mode=mode)] * len(pixels))
    labels = [tuple(item.attributes[a].label for a in sorted(item.attributes)) for item in items]
    return labels, [item.caption.decoded_text for item in items], [item.caption.confidence for item in items]


@pytest.mark.parametrize("mode", ["GENERATE", "BEAM_SEARCH"])
def test_the_export_at_fp32_gives_eager_torchs_labels_and_captions(mode: str, random_bundle_dir: Path,
                                                                    catalogue_dir: Path):
    from enrich_model.answers import CaptionMode
    from enrich_model.bundle import load_bundle
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline

    eager = EnrichPipeline.eager(load_bundle(random_bundle_dir), channels_last=False)
    exported = EnrichPipeline.load(random_bundle_dir, RuntimeOptions(device="cpu", backend="openvino",
                                                                     precision="fp32"))
    assert exported.backend.choice.name == "openvino"
    pixels = pixels_of(eager, catalogue_dir)
    reference, ours = (predictions(p, pixels, CaptionMode[mode]) for p in (eager, exported))
    assert ours[0] == reference[0]  # every label
    assert ours[1] == reference[1]  # every caption, token for token
    assert max(len(text.split()) for text in reference[1]) >= TOKENS - 2  # long captions: the cache was used
    np.testing.assert_allclose(ours[2], reference[2], rtol=1e-3)


@pytest.mark.parametrize("beams", [1, 3])
def test_the_exported_decoder_writes_what_generate_writes_for_any_image(beams: int, random_bundle_dir: Path):
    """Encoder tokens far apart (a random backbone's images look alike to it): the captions differ per image,
    so the cross-attention keys and values are checked too."""
    import torch

    from enrich_model.backends import Precision
    from enrich_model.bundle import load_bundle
    from enrich_model.bundle_config import BundleConfig
    from enrich_model.openvino_backend import EXPORT_DIR, OpenVinoBackend, read_manifest
    from enrich_model.torch_backend import TorchBackend

    bundle = load_bundle(random_bundle_dir)
    config = BundleConfig.read(random_bundle_dir)
    folder = random_bundle_dir / EXPORT_DIR
    exported = OpenVinoBackend(folder, read_manifest(folder, config.model_version), bundle.model.colour,
                               Precision.FP32)
    tokens = torch.randn(10, 49, config.backbone.num_features, generator=torch.Generator().manual_seed(beams)) * 3
    reference = TorchBackend(bundle).caption(list(tokens), num_beams=beams)
    ours = exported.caption(list(tokens.numpy()), num_beams=beams)
    assert ours.texts == reference.texts and ours.token_counts == reference.token_counts
    assert len(set(reference.texts)) >= 5
    np.testing.assert_allclose(ours.confidences, reference.confidences, rtol=1e-3)


def test_at_bf16_only_the_backbone_is_reduced_the_decoder_writes_fp32s_captions(random_bundle_dir: Path):
    """As on the torch backend. This random decoder is ill-conditioned: a bf16 step would change its captions
    within a few tokens."""
    from enrich_model.backends import Precision, fast_precisions
    from enrich_model.bundle_config import BundleConfig
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline

    if Precision.BF16 not in fast_precisions("cpu"):
        pytest.skip("this CPU has no bf16: OpenVINO would run everything in fp32")
    fp32, bf16 = (EnrichPipeline.load(random_bundle_dir, RuntimeOptions(device="cpu", backend="openvino",
                                                                        precision=p)).backend
                  for p in ("fp32", "bf16"))
    features = BundleConfig.read(random_bundle_dir).backbone.num_features
    tokens = list(np.random.default_rng(0).standard_normal((8, 49, features), np.float32) * 3)
    assert bf16.caption(tokens).texts == fp32.caption(tokens).texts
    pixels = np.random.default_rng(1).random((2, 3, 32, 32), np.float32)
    assert np.abs(bf16.encode(pixels).pooled - fp32.encode(pixels).pooled).max() > 1e-4  # the backbone is bf16


def test_once_warm_the_server_holds_no_pages_of_the_exported_weight_files(random_bundle_dir: Path,
                                                                          catalogue_dir: Path):
    from enrich_model.answers import CaptionMode
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline
    from enrich_model.resident import resident_bytes

    pipeline = EnrichPipeline.load(random_bundle_dir, RuntimeOptions(device="cpu", backend="openvino"))
    files = pipeline.backend.weight_files
    pixels = pixels_of(pipeline, catalogue_dir, 4)
    before = predictions(pipeline, pixels, CaptionMode.GENERATE)
    loaded = resident_bytes(files)
    assert loaded > 0
    pipeline.warm(1)
    assert resident_bytes(files) < loaded / 4
    assert predictions(pipeline, pixels, CaptionMode.GENERATE) == before  # the weights still read right


def test_enrich_export_writes_every_file_and_serve_says_what_is_missing(random_bundle_dir: Path, tmp_path: Path):
    from enrich_model.openvino_backend import EXPORT_DIR, read_manifest

    copy = tmp_path / "bundle"
    shutil.copytree(random_bundle_dir, copy, ignore=shutil.ignore_patterns(EXPORT_DIR))
    done = subprocess.run([sys.executable, "-m", "enrich_cli.main", "export", str(copy)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(copy / EXPORT_DIR, json.loads((copy / "enrich.json").read_text())["model_version"])
    assert sorted(manifest.files) == sorted(p.name for p in (copy / EXPORT_DIR).iterdir())

    (copy / EXPORT_DIR / "step.bin").unlink()
    refused = serve_without_torch(copy, tmp_path)
    assert refused.returncode == 2
    assert "lacks step.bin" in refused.stderr and f"enrich export {copy}" in refused.stderr
    shutil.rmtree(copy / EXPORT_DIR)
    refused = serve_without_torch(copy, tmp_path)
    assert refused.returncode == 2 and "has no OpenVINO export" in refused.stderr
    assert "Traceback" not in refused.stderr


def serve_without_torch(bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`enrich serve` in a process where torch and transformers cannot be imported (as with serve-cpu)."""
    script = ("import sys; sys.modules['torch'] = sys.modules['transformers'] = None\n"
              "from enrich_server.app import main\n"
              f"sys.exit(main(['--model', {str(bundle)!r}, '--port', '0', '--http-port', '-1', "
              "'--metrics-port', '-1']))")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def test_a_cpu_server_with_the_export_never_imports_torch(random_bundle_dir: Path, catalogue_dir: Path,
                                                          tmp_path: Path):
    from enrich_cli.server_process import start_server
    from enrich_client import EnrichClient

    served = start_server(random_bundle_dir, tmp_path / "server.log", "--device", "cpu", "--backend", "openvino")
    try:
        with EnrichClient(f"127.0.0.1:{served.port}") as client:
            image = sorted((catalogue_dir / "images").glob("*.jpg"))[0]
            answer = client.enrich(image.read_bytes(), caption_mode="generate")
            assert answer.metadata.product_display_name.text
        mapped = Path(f"/proc/{served.process.pid}/maps").read_text()
        libraries = {line.split()[-1] for line in mapped.splitlines() if ".so" in line}
        assert not [lib for lib in libraries if "torch" in lib], "the server process loaded torch"
        assert any("openvino" in lib for lib in libraries)
    finally:
        served.process.terminate()
        served.process.wait(timeout=60)
    assert os.path.exists(random_bundle_dir / "openvino" / "export.json")


def test_the_startup_bench_reports_time_to_serving_and_memory(random_bundle_dir: Path):
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline

    EnrichPipeline.load(random_bundle_dir, RuntimeOptions(device="cpu", backend="openvino"))  # makes the export
    done = subprocess.run([sys.executable, "-m", "enrich_cli.bench.startup", str(random_bundle_dir), "--starts", "1",
                           "--calls", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert 0 < figures["seconds_to_serving"] < 120 and figures["idle_rss_mb"] > 50
    assert figures["rss_after_2_captioned_calls_mb"] > 50 and figures["torch_loaded"] is False
