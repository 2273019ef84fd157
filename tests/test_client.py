"""The enrich-client command: a file, a folder over one stream, info and health; torch never imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import LoopbackServer

# Run the client in a fresh interpreter where importing torch (or transformers) fails outright.
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
    "from enrich_client.cli import main; code = main(sys.argv[1:]); "
    "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]; sys.exit(code)"
)


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_one_file_prints_json(server: LoopbackServer, catalogue_dir: Path):
    image = sorted((catalogue_dir / "images").glob("*.jpg"))[0]
    result = run_client("--target", server.target, str(image))  # `enrich` is the default command
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["metadata"]["article_type"]["label"]
    assert response["metadata"]["product_display_name"]["text"] is not None
    assert response["request_id"] == str(image)


def test_folder_streams_json_lines_with_progress(server: LoopbackServer, catalogue_dir: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    images = sorted((catalogue_dir / "images").glob("*.jpg"))[:6]
    for image in images[:3]:
        shutil.copy(image, folder / image.name)
    for image in images[3:]:
        shutil.copy(image, folder / "nested" / image.name)
    (folder / "broken.png").write_bytes(b"not really a png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "results.jsonl"
    result = run_client("--target", server.target, "enrich", str(folder), "--out", str(out), "--top-k", "2")
    assert result.returncode == 1, result.stderr  # one item failed, so the exit code says so
    assert "6 enriched, 1 failed" in result.stderr
    assert "enrich" in result.stderr and "img" in result.stderr  # the progress bar
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 7
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["broken.png"]["status"]["code"] == 3
    assert f"nested/{images[4].name}" in by_id
    assert len(by_id[images[0].name]["metadata"]["gender"]["alternatives"]) == 2


def test_info_and_health(server: LoopbackServer):
    result = run_client("--target", server.target, "info")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["model_version"] and info["attributes"][0]["labels"]
    health = run_client("--target", server.target, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")


def test_health_when_nothing_listens():
    result = run_client("--target", "127.0.0.1:1", "health")
    assert result.returncode == 1 and result.stdout.strip() == "UNAVAILABLE"
