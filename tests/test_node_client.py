"""The Node.js client (clients/node) against a live server: typed fields, the options it sends, per-item statuses."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .conftest import LoopbackServer, node_command


def run_node(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(node_command(script, *args), capture_output=True, text=True, timeout=120)


def test_node_enriches_one_file_with_typed_fields(node_client: Path, server: LoopbackServer, catalogue_dir: Path):
    image = sorted((catalogue_dir / "images").glob("*.jpg"))[0]
    result = run_node(node_client, "--target", server.target, "--top-k", "2", str(image))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["requestId"] == image.name  # the request's fields reached the server
    assert answer["status"]["code"] == 0  # present, a number, on success
    metadata = answer["metadata"]
    assert isinstance(metadata["articleType"]["label"], str) and 0 < metadata["articleType"]["confidence"] <= 1
    assert [len(metadata[a]["alternatives"]) for a in ("gender", "articleType")] == [2, 2]  # not the default 3
    assert metadata["image"]["sizeBytes"] == str(image.stat().st_size)  # uint64 as a string, as JSON maps it
    assert metadata["productDisplayName"]["method"] == "CAPTION_MODE_GENERATE"  # enums as names


def test_node_streams_a_folder_and_reports_the_bad_item(node_client: Path, server: LoopbackServer,
                                                         catalogue_dir: Path, tmp_path: Path):
    for path in sorted((catalogue_dir / "images").glob("*.jpg"))[:4]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    result = run_node(node_client, "--target", server.target, "--caption-mode", "skip", str(tmp_path))
    assert result.returncode == 1  # one item failed
    answers = {a["requestId"]: a for a in map(json.loads, result.stdout.splitlines())}
    assert len(answers) == 5 and result.stderr.strip().splitlines()[-1] == "4 enriched, 1 failed"
    bad = answers["broken.jpg"]["status"]
    assert bad["code"] == 3 and bad["reason"] == "IMAGE_UNDECODABLE" and "bytes" in bad["message"]
    good = [a for name, a in answers.items() if name != "broken.jpg"]
    assert all(a["status"]["code"] == 0 and "productDisplayName" not in a["metadata"] for a in good)
