"""The generated code is current, the `enrich` command works, and the demo runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert "5 enriched, 0 failed" in result.stderr
    assert "test-split metrics" in result.stdout and "articleType" in result.stdout
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 5
    assert "SERVING" in result.stdout


def test_bench_prints_latency_and_throughput(server):
    result = subprocess.run([sys.executable, "-m", "enrich_cli.main", "bench", "--target", server.target,
                             "--count", "6", "--image-size", "120x160", "--concurrency", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "p50" in result.stdout and result.stdout.count("img/s") == 4
