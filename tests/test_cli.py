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
