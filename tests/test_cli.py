"""The generated code is current, the `enrich` command works, and the demo runs end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_generated_grpc_code_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_synth_and_info(bundle_dir: Path, tmp_path: Path):
    enrich = [sys.executable, "-m", "enrich_cli.main"]
    made = subprocess.run([*enrich, "synth", "--out", str(tmp_path), "--count", "5", "--image-size", "30x40"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert len((tmp_path / "styles.csv").read_text().splitlines()) == 6
    info = subprocess.run([*enrich, "info", str(bundle_dir)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert "articleType" in info.stdout and "accuracy" in info.stdout


def test_demo_end_to_end(tmp_path: Path):
    """The README's demo command, smaller: a real server process and the real client command."""
    result = subprocess.run([sys.executable, "-m", "enrich_cli.main", "demo", "--workdir", str(tmp_path),
                             "--count", "240", "--holdout", "5"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^5 enriched, 0 failed$", result.stderr, re.MULTILINE), result.stderr[-2000:]
    assert "test-split metrics" in result.stdout and "articleType" in result.stdout
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 5
    assert "SERVING" in result.stdout
    assert (tmp_path / "audit" / "report.html").is_file() and '"duplicates"' in result.stdout


def test_bench_prints_latency_and_throughput(server):
    result = subprocess.run([sys.executable, "-m", "enrich_cli.main", "bench", "--target", server.target,
                             "--count", "16", "--image-size", "120x160", "--camera", "2", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "p99" in result.stdout and result.stdout.count("img/s") == 7
    figures = json.loads(result.stdout.splitlines()[-1])
    measured = figures["grpc"]["target"]
    assert measured["catalogue/stream/generate"]["images_per_second"] > 0
    assert figures["ratios"]["caption_cost"] < 1 and figures["cache_hits_during_run"] == 0


def test_the_quick_bench_measures_the_caption_stage_against_the_machine_and_the_decode_stage(bundle_dir: Path):
    result = subprocess.run([sys.executable, "-m", "enrich_cli.main", "bench", "--model", str(bundle_dir), "--quick",
                             "--count", "32", "--agreement-images", "16", "--image-size", "60x80", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.splitlines()[-1])
    stage = figures["decode_stage_ms"]
    assert 0 < stage["decode_only"] < stage["with_palette_and_signature"]
    graphs = figures["caption_graphs"]
    assert 0 < graphs["gflop_per_caption"]["served"][0] < graphs["gflop_per_caption"]["served"][-1]
    served = figures["encoders"][graphs["serving_default"]]
    assert served["captions_per_second"] > 0 and served["decoder_gflops"] > 0
    ratios = figures["ratios"]
    assert ratios["eager_fp32_generate_agreement"] == ratios["export_fp32_generate_agreement"] == 1.0
    assert ratios["caption_stage_vs_whole_vocabulary_allowance"] > 0
    assert "GFLOP/s" in result.stdout and "fp32 matmul rate" in result.stdout


def test_bench_against_a_caching_server_measures_uncached_answers(bundle_dir: Path):
    from .conftest import LoopbackServer

    caching = LoopbackServer(bundle_dir, cache_mb=16)  # as `enrich serve` starts by default
    caching.load()
    try:
        result = subprocess.run([sys.executable, "-m", "enrich_cli.main", "bench", "--target", caching.target,
                                 "--count", "16", "--image-size", "120x160", "--camera", "0", "--json"],
                                capture_output=True, text=True, timeout=300)
        load = caching.call(_load(caching))
    finally:
        caching.close()
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert "every request is made unique" in result.stdout
    assert figures["cache_hits_during_run"] == 0 and load.cache_hits == 0 and load.cache_misses > 0


async def _load(server):
    return server.server.service.model_info().load


def test_export_writes_the_openvino_files_that_serve_reads(bundle_dir: Path, tmp_path: Path):
    pytest.importorskip("openvino")
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    shutil.rmtree(copy / "openvino", ignore_errors=True)
    result = subprocess.run([sys.executable, "-m", "enrich_cli.main", "export", str(copy)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    stamp = json.loads((copy / "openvino" / "export.json").read_text())
    assert stamp["model_version"] in result.stdout and (copy / "openvino" / "encoder.bin").stat().st_size > 0
    # Made at image build time as root, read by the server as uid 10001: the folder must be readable by all.
    umask = os.umask(0)
    os.umask(umask)
    assert (copy / "openvino").stat().st_mode & 0o777 == 0o777 & ~umask


def test_bench_ratios_judge_each_target_from_its_side(capsys):
    """Parity and speed ratios come from the same run's figures; caption cost is a ceiling, the rest floors, and the
    real recipe's shapes have their own targets."""
    from enrich_cli.bench import REAL_SHAPE_TARGETS, TARGETS, ratios, say_ratios

    def encoder(speed: float, labels: float, captions: float) -> dict:
        return {"images_per_second": speed, "label_agreement": labels, "caption_agreement": captions,
                "generate_agreement": captions, "beam_generate_agreement": 1.0, "max_feature_error": 1e-6,
                "share_of_fp32_matmul": 0.5}

    def served(generate: float, skip: float) -> dict:
        return {f"catalogue/{kind}/{mode}": {"images_per_second": speed} for kind in ("stream", "unary")
                for mode, speed in (("generate", generate), ("skip", skip))}

    figures = {"encoders": {"torch/fp32 (contiguous)": encoder(10, 1, 1), "openvino/fp32": encoder(20, 1, 0.99),
                            "openvino/bf16": encoder(40, 0.995, 0.96)},
               "grpc": {"default": served(6.5, 10), "eager": served(2, 3)}}
    measured = ratios(figures)
    assert measured["reduced_precision_vs_eager_fp32"] == 4 and measured["reduced_precision_caption_agreement"] == 0.96
    assert measured["export_fp32_agreement"] == 1 and measured["export_fp32_caption_agreement"] == 0.99
    assert measured["grpc_vs_eager_serving_caption"] == 3.25 and measured["caption_cost"] == pytest.approx(0.35)
    say_ratios(measured, TARGETS)
    verdicts = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert verdicts["caption_cost"] == "MISSED" and verdicts["reduced_precision_agreement"] == "ok"
    assert verdicts["reduced_precision_caption_agreement"] == "MISSED"
    assert verdicts["export_fp32_caption_agreement"] == "MISSED" and verdicts["export_fp32_agreement"] == "ok"
    assert verdicts["eager_fp32_generate_agreement"] == "ok" and verdicts["export_fp32_generate_agreement"] == "MISSED"
    say_ratios(measured, REAL_SHAPE_TARGETS)
    verdicts = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert verdicts["grpc_vs_eager_serving_caption"] == "MISSED"  # 3.25: the real shapes ask for 3.5
    # A random decoder's captions are not judged (reported only): its weights are ill-conditioned, its vocabulary
    # drawn at random.
    assert verdicts["reduced_precision_caption_agreement"] == "0.960"
    assert verdicts["reduced_precision_agreement"] == "ok"
