"""The enrich-client command: a file, a folder over one stream, info and health; torch never imported."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from enrich_model.bundle_config import BundleConfig

from .conftest import LoopbackServer

# Run the client in a fresh interpreter (torch is installed here) and report, at exit, any model-side package
# it imported: the client is gRPC and protobuf only.
HEAVY = ("torch", "transformers", "numpy", "PIL", "enrich_model", "enrich_server")
WATCHED = (
    "import atexit, sys\n"
    f"heavy = {HEAVY!r}\n"
    "atexit.register(lambda: print('IMPORTED ' + ' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))),"
    " file=sys.stderr))\n"
    "from enrich_client.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_client(*args: str, **environment: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", WATCHED, *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **environment})
    imported = [line for line in result.stderr.splitlines() if line.startswith("IMPORTED")]
    assert imported == ["IMPORTED "], imported  # none of them, whatever the command did
    return result


def test_the_no_heavy_import_check_can_fail():
    result = subprocess.run([sys.executable, "-c", "import numpy\n" + WATCHED, "health", "--target", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=120)
    assert "IMPORTED numpy" in result.stderr


def test_one_file_prints_json_with_the_target_from_the_environment(server: LoopbackServer, catalogue_dir: Path):
    image = sorted((catalogue_dir / "images").glob("*.jpg"))[0]
    result = run_client(str(image), ENRICH_TARGET=server.target)  # `enrich` is the default command
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    metadata = response["metadata"]
    assert response["requestId"] == str(image) and response["status"]["code"] == 0
    assert metadata["articleType"]["label"] in BundleConfig.read(server.server.settings.model).attributes["articleType"]
    caption = metadata["productDisplayName"]
    assert caption["method"] == "CAPTION_MODE_GENERATE" and caption["text"].strip()
    assert metadata["image"]["sizeBytes"] == str(image.stat().st_size)  # uint64: a string, as JSON maps it


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
    result = run_client("--target", server.target, "enrich", str(folder), "--out", str(out), "--top-k", "2",
                        "--caption-mode", "TEMPLATE")
    assert result.returncode == 1, result.stderr  # one item failed, so the exit code says so
    assert re.search(r"^6 enriched, 1 failed$", result.stderr, re.MULTILINE), result.stderr
    assert "enrich" in result.stderr and "img" in result.stderr  # the progress bar
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 7
    by_id = {line["requestId"]: line for line in lines}
    assert by_id["broken.png"]["status"]["code"] == 3
    assert f"nested/{images[4].name}" in by_id
    assert len(by_id[images[0].name]["metadata"]["gender"]["alternatives"]) == 2
    assert by_id[images[0].name]["metadata"]["productDisplayName"]["method"] == "CAPTION_MODE_TEMPLATE"


def test_a_wrong_caption_mode_is_refused_naming_the_valid_ones(server: LoopbackServer, catalogue_dir: Path):
    image = sorted((catalogue_dir / "images").glob("*.jpg"))[0]
    result = run_client("--target", server.target, str(image), "--caption-mode", "beam")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "caption mode 'beam' is not one of generate, beam_search, template, skip" in result.stderr


def test_info_and_health(server: LoopbackServer):
    result = run_client("--target", server.target, "info")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["modelVersion"] == BundleConfig.read(server.server.settings.model).model_version
    assert info["attributes"][0]["labels"]
    health = run_client("--target", server.target, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")


def test_health_when_nothing_listens():
    result = run_client("--target", "127.0.0.1:1", "health")
    assert result.returncode == 1 and result.stdout.strip() == "UNAVAILABLE"
