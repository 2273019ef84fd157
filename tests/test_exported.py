"""The model's one graph definition on both backends, and its OpenVINO export as a verified artifact. Parity runs
on a bundle of random weights (conftest's random_bundle_dir)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from enrich_model.backends import available_backends

from .conftest import RANDOM_CAPTION_TOKENS as TOKENS

pytestmark = pytest.mark.skipif("openvino" not in available_backends("cpu"), reason="openvino is not installed")



def enrich_export(bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enrich_cli.main", "export", str(bundle)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(random_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(a copy of the random bundle with its export, what `enrich export` printed on stderr)."""
    copy = tmp_path_factory.mktemp("exported") / "bundle"
    shutil.copytree(random_bundle_dir, copy)
    done = enrich_export(copy)
    assert done.returncode == 0, done.stderr
    return copy, done.stderr


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import torch, transformers or timm (as with the serve-cpu extra)."""
    hook = tmp_path / "no-torch"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text("import sys\nsys.modules.update(torch=None, transformers=None, timm=None)\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}


def serve(bundle: Path, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`enrich serve` that stops at whatever it refuses (it is not expected to start)."""
    return subprocess.run([sys.executable, "-m", "enrich_cli.main", "serve", "--model", str(bundle), "--port", "0",
                           "--http-port", "-1", "--metrics-port", "-1", "--grace-seconds", "0"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, **(env or {})})


def serve_one_caption(bundle: Path, log: Path, catalogue_dir: Path, *options: str, **start: object) -> None:
    """Starts `enrich serve` on `bundle`, has it caption one catalogue image, and stops it."""
    from enrich_cli.server_process import start_server
    from enrich_client import EnrichClient

    served = start_server(bundle, log, "--device", "cpu", *options, **start)
    try:
        with EnrichClient(f"127.0.0.1:{served.port}") as client:
            image = sorted((catalogue_dir / "images").glob("*.jpg"))[0]
            assert client.enrich(image.read_bytes(), caption_mode="generate").metadata.product_display_name.text
    finally:
        served.process.terminate()
        served.process.wait(timeout=60)


def pipelines(bundle: Path):
    """(eager torch fp32, OpenVINO fp32) on the same bundle."""
    from enrich_model.bundle import load_bundle
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline

    eager = EnrichPipeline.eager(load_bundle(bundle), channels_last=False)
    exported = EnrichPipeline.load(bundle, RuntimeOptions(device="cpu", backend="openvino", precision="fp32"))
    assert exported.backend.choice.name == "openvino"
    return eager, exported


def test_enrich_export_writes_each_graph_with_its_hash_and_no_library_notices(exported: tuple[Path, str]):
    from enrich_model.bundle_config import BundleConfig
    from enrich_model.export_store import EXPORT_DIR, GRAPHS, MANIFEST_FILE, ExportManifest, file_sha256

    bundle, printed = exported
    folder = bundle / EXPORT_DIR
    manifest = ExportManifest.read(folder)
    config = BundleConfig.read(bundle)
    assert manifest.stale_for(config) is None and manifest.weights_sha256 == config.weights_sha256
    assert sorted(p.name for p in folder.iterdir()) == sorted([*manifest.files, MANIFEST_FILE])
    assert sorted(manifest.files) == sorted(f"{graph}.{ext}" for graph in GRAPHS for ext in ("xml", "bin"))
    assert all(file_sha256(folder / name) == digest for name, digest in manifest.files.items())
    assert printed == "", printed  # no warnings, no progress bars: nothing a user would have to act on


@pytest.mark.parametrize("beams", [1, 3])
def test_both_backends_run_the_one_graph_definition_and_write_what_generate_writes(beams: int,
                                                                                   exported: tuple[Path, str]):
    """Encoder tokens far apart (a random backbone's images look alike to it): the captions differ per image,
    so the cross-attention keys and values are checked too."""
    import torch

    from enrich_model.graphs import ModelGraphs
    from enrich_model.oracle import generate_captions

    eager, on_openvino = pipelines(exported[0])
    assert isinstance(eager.backend.graphs, ModelGraphs)  # what the export converted (test above: its files)
    features = eager.bundle.config.backbone.num_features
    tokens = torch.randn(10, 49, features, generator=torch.Generator().manual_seed(beams)) * 3
    reference = generate_captions(eager.bundle, tokens, beams)
    assert len(set(reference.texts)) >= 5 and max(reference.token_counts) >= TOKENS - 2
    for ours in (eager.generate(list(tokens), beams), on_openvino.generate(list(tokens.numpy()), beams)):
        assert ours.texts == reference.texts and ours.token_counts == reference.token_counts
        np.testing.assert_allclose(ours.confidences, reference.confidences, rtol=1e-3)


def pixels_of(pipeline, catalogue_dir: Path, count: int = 24) -> np.ndarray:
    paths = sorted((catalogue_dir / "images").glob("*.jpg"))[:count]
    return np.stack([pipeline.decode(p.read_bytes())[1] for p in paths])


def predictions(pipeline, pixels: np.ndarray, mode) -> tuple[list, list[str], list[float]]:
    from enrich_model.answers import ItemOptions

    items = pipeline.predict(pixels, [ItemOptions(caption_mode=mode)] * len(pixels))
    labels = [tuple(item.attributes[a].label for a in sorted(item.attributes)) for item in items]
    return labels, [item.caption.decoded_text for item in items], [item.caption.confidence for item in items]


@pytest.mark.parametrize("mode", ["GENERATE", "BEAM_SEARCH"])
def test_the_export_at_fp32_gives_eager_torchs_labels_and_captions(mode: str, exported: tuple[Path, str],
                                                                    catalogue_dir: Path):
    from enrich_model.answers import CaptionMode

    eager, on_openvino = pipelines(exported[0])
    pixels = pixels_of(eager, catalogue_dir)
    reference, ours = (predictions(p, pixels, CaptionMode[mode]) for p in (eager, on_openvino))
    assert ours[0] == reference[0]  # every label
    assert ours[1] == reference[1]  # every caption, token for token
    assert max(len(text.split()) for text in reference[1]) >= TOKENS - 2  # long captions: the cache was used
    np.testing.assert_allclose(ours[2], reference[2], rtol=1e-3)


def test_at_bf16_only_the_backbone_is_reduced_the_decoder_writes_fp32s_captions(exported: tuple[Path, str]):
    """As on the torch backend. This random decoder is ill-conditioned: a bf16 step would change its captions
    within a few tokens."""
    from enrich_model.backends import Precision, fast_precisions
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline

    if Precision.BF16 not in fast_precisions("cpu"):
        pytest.skip("this CPU has no bf16: OpenVINO would run everything in fp32")
    fp32, bf16 = (EnrichPipeline.load(exported[0], RuntimeOptions(device="cpu", backend="openvino", precision=p))
                  for p in ("fp32", "bf16"))
    features = fp32.bundle.config.backbone.num_features
    tokens = list(np.random.default_rng(0).standard_normal((8, 49, features), np.float32) * 3)
    assert bf16.generate(tokens).texts == fp32.generate(tokens).texts
    pixels = np.random.default_rng(1).random((2, 3, 32, 32), np.float32)
    assert np.abs(bf16.encode(pixels).pooled - fp32.encode(pixels).pooled).max() > 1e-4  # the backbone is bf16


def test_once_warm_the_server_holds_no_pages_of_the_exported_weight_files(exported: tuple[Path, str],
                                                                          catalogue_dir: Path):
    from enrich_model.answers import CaptionMode
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline
    from enrich_model.resident import resident_bytes

    pipeline = EnrichPipeline.load(exported[0], RuntimeOptions(device="cpu", backend="openvino"))
    files = pipeline.backend.weight_files
    pixels = pixels_of(pipeline, catalogue_dir, 4)
    before = predictions(pipeline, pixels, CaptionMode.GENERATE)
    loaded = resident_bytes(files)
    assert loaded > 0
    pipeline.warm(1)
    assert resident_bytes(files) < loaded / 4
    assert predictions(pipeline, pixels, CaptionMode.GENERATE) == before  # the weights still read right


def test_a_changed_export_file_is_refused_in_one_line(exported: tuple[Path, str], tmp_path: Path):
    from enrich_model.backends import BackendChoice, Precision, load_backend
    from enrich_model.bundle_info import BundleInfo
    from enrich_model.export_store import ExportDamaged

    bundle = copy_of(exported[0], tmp_path)
    weights = bundle / "openvino" / "caption_step.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    weights.write_bytes(bytes(data))
    refused = serve(bundle, tmp_path, no_torch_env(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "caption_step.bin changed since it was exported" in refused.stderr and "enrich export" in refused.stderr
    with pytest.raises(ExportDamaged, match=r"caption_step\.bin"):  # with torch too: refused, not silently made again
        load_backend(BundleInfo.read(bundle), BackendChoice("openvino", Precision.FP32), "cpu", 1)


def test_an_older_releases_export_of_the_same_format_serves_without_torch(exported: tuple[Path, str],
                                                                          catalogue_dir: Path, tmp_path: Path):
    from enrich_model.export_store import MANIFEST_FILE

    bundle = copy_of(exported[0], tmp_path)
    manifest = bundle / "openvino" / MANIFEST_FILE
    older = {"enrich": "0.1.0", "openvino": "2025.0.0", "torch": "2.4.0", "transformers": "5.0.0"}
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"made_by": older}))
    serve_one_caption(bundle, tmp_path / "server.log", catalogue_dir, env=no_torch_env(tmp_path))
    old = {"format": 2, "model_version": "random-000000000000", "openvino": "2026.4.1", "enrich": "0.2.0"}
    manifest.write_text(json.dumps(old))  # an export of another format, whose manifest holds other fields
    refused = serve(bundle, tmp_path, no_torch_env(tmp_path))
    assert refused.returncode == 2 and "export format 2" in refused.stderr and "enrich export" in refused.stderr


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder`, by relative path, with its SHA-256."""
    from enrich_model.export_store import file_sha256

    return {str(path.relative_to(folder)): file_sha256(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def as_nobody() -> list[str]:
    """A launcher that runs a command as an unprivileged user, so that a root-owned folder is really read-only to
    it (root ignores file modes); none when the tests run unprivileged already."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture()
def open_tmp_path() -> Iterator[Path]:
    """A temporary folder that another user can reach (pytest's own sit in a folder only their owner can)."""
    folder = Path(tempfile.mkdtemp(prefix="enrich-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_server_exports_into_its_cache_and_never_writes_its_read_only_bundle(random_bundle_dir: Path,
                                                                               catalogue_dir: Path,
                                                                               open_tmp_path: Path):
    launcher, tmp_path = as_nobody(), open_tmp_path
    bundle = copy_of(random_bundle_dir, tmp_path)
    for path in [bundle, *bundle.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o444)  # read-only, to the server's user too
    shared = tmp_path / "shared"  # the cache, the server's home, its log and ready file: writable by it
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    before = tree(bundle)
    env = {"ENRICH_EXPORT_CACHE": str(shared / "exports"), "HOME": str(shared)}
    logs = []
    for start in range(2):
        logs.append(shared / f"server-{start}.log")
        serve_one_caption(bundle, logs[-1], catalogue_dir, "--backend", "openvino", launcher=launcher, env=env)
    assert tree(bundle) == before
    assert [p.name for p in (shared / "exports").iterdir() if not p.name.startswith(".")] != []
    assert "exporting now" in logs[0].read_text() and "exporting now" not in logs[1].read_text()  # made once


def test_the_export_cache_holds_one_export_per_source(random_bundle_dir: Path, tmp_path: Path, monkeypatch):
    import dataclasses

    import openvino

    from enrich_model.backends import BackendChoice, Precision, load_backend
    from enrich_model.bundle_info import BundleInfo
    from enrich_model.export_store import ExportMissing

    bundle = BundleInfo.read(random_bundle_dir)
    choice, cache = BackendChoice("openvino", Precision.FP32), tmp_path / "cache"
    load_backend(bundle, choice, "cpu", 1, cache=cache)
    assert not (random_bundle_dir / "openvino").exists() and len(list(cache.iterdir())) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the export was cached")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    load_backend(bundle, choice, "cpu", 1, cache=cache)
    vocabulary = dataclasses.replace(bundle.config.caption, vocabulary=list(range(200)))
    other = dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, caption=vocabulary))
    with pytest.raises(AssertionError, match="converted again"):  # other graphs of the same weights: not reused
        load_backend(other, choice, "cpu", 1, cache=cache)
    monkeypatch.setattr("enrich_model.backends.torch_installed", lambda: False)
    with pytest.raises(ExportMissing, match="enrich export"):  # without torch, it says how to make one
        load_backend(other, choice, "cpu", 1, cache=cache)


def test_without_torch_a_missing_export_is_refused_in_words(random_bundle_dir: Path, tmp_path: Path):
    refused = serve(random_bundle_dir, tmp_path, {**no_torch_env(tmp_path), "ENRICH_EXPORT_CACHE": str(tmp_path)})
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "has no OpenVINO export" in refused.stderr and f"enrich export {random_bundle_dir}" in refused.stderr


def test_a_cpu_server_with_the_export_never_imports_torch(exported: tuple[Path, str], catalogue_dir: Path,
                                                          tmp_path: Path):
    from enrich_cli.server_process import start_server
    from enrich_client import EnrichClient

    served = start_server(exported[0], tmp_path / "server.log", "--device", "cpu", "--backend", "openvino")
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


def test_the_startup_bench_reports_time_to_serving_and_memory(exported: tuple[Path, str]):
    done = subprocess.run([sys.executable, "-m", "enrich_cli.bench.startup", str(exported[0]), "--starts", "1",
                           "--calls", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert 0 < figures["seconds_to_serving"] < 120 and figures["idle_rss_mb"] > 50
    assert figures["rss_after_2_captioned_calls_mb"] > 50 and figures["torch_loaded"] is False
