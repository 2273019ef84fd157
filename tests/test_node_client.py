"""The Node.js client (clients/node) against a live server: typed fields and per-item statuses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import LoopbackServer

NODE_CLIENT = Path(__file__).resolve().parent.parent / "clients" / "node"
NODE, NPM = shutil.which("node"), shutil.which("npm")


@pytest.fixture(scope="module")
def node_client() -> Path:
    if not (NODE and NPM):
        if os.environ.get("CI"):
            pytest.fail("CI must run the Node.js client: install node and npm")
        pytest.skip("node and npm are not installed")
    # `npm ci` installs exactly the committed package-lock.json from the npm registry.
    subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True, capture_output=True,
                   timeout=300)
    return NODE_CLIENT / "enrich.js"


def run_node(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, str(script), *args], capture_output=True, text=True, timeout=120)


def test_node_enriches_one_file_with_typed_fields(node_client: Path, server: LoopbackServer, catalogue_dir: Path):
    image = sorted((catalogue_dir / "images").glob("*.jpg"))[0]
    result = run_node(node_client, "--target", server.target, str(image))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["request_id"] == image.name  # snake_case request fields reached the server
    assert answer["status"]["code"] == 0  # present, a number, on success
    metadata = answer["metadata"]
    assert isinstance(metadata["article_type"]["label"], str) and 0 < metadata["article_type"]["confidence"] <= 1
    assert len(metadata["gender"]["alternatives"]) == 3  # top_k reached the server
    assert metadata["image"]["size_bytes"] == image.stat().st_size  # uint64 as a plain number
    assert metadata["product_display_name"]["method"] == "CAPTION_MODE_GENERATE"  # enums as names


def test_node_streams_a_folder_and_reports_the_bad_item(node_client: Path, server: LoopbackServer,
                                                         catalogue_dir: Path, tmp_path: Path):
    for path in sorted((catalogue_dir / "images").glob("*.jpg"))[:4]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    result = run_node(node_client, "--target", server.target, "--caption", "skip", str(tmp_path))
    assert result.returncode == 1  # one item failed
    answers = {a["request_id"]: a for a in map(json.loads, result.stdout.splitlines())}
    assert len(answers) == 5 and "4 enriched, 1 failed" in result.stderr
    bad = answers["broken.jpg"]["status"]
    assert bad["code"] == 3 and bad["reason"] == "IMAGE_UNDECODABLE" and "bytes" in bad["message"]
    assert all(a["status"]["code"] == 0 for name, a in answers.items() if name != "broken.jpg")
