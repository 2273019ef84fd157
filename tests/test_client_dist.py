"""The client distribution on its own, and the retries it asks gRPC for."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from enrich_client import AsyncEnrichClient, EnrichClient, EnrichError

from .conftest import LoopbackServer, png_bytes

CLIENT_DIST = Path(__file__).resolve().parent.parent / "clients" / "python"


def test_the_client_installs_alone_without_torch_and_enriches(server: LoopbackServer, catalogue_dir: Path,
                                                               tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    source = tmp_path / "client"
    shutil.copytree(CLIENT_DIST, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([venv / "bin" / "pip", "install", "--quiet", str(source)], capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    listed = subprocess.run([venv / "bin" / "pip", "list", "--format", "json"], capture_output=True, text=True,
                            check=True).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert "enrich-grpc-client" in installed and "torch" not in installed and "numpy" not in installed
    image = next((catalogue_dir / "images").glob("*.jpg"))
    result = subprocess.run([venv / "bin" / "enrich-client", "--target", server.target, str(image)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metadata"]["articleType"]["label"]
    audit = subprocess.run([venv / "bin" / "enrich-client", "--target", server.target, "audit", str(catalogue_dir),
                            "--out", str(tmp_path / "audit")], capture_output=True, text=True, timeout=120)
    assert audit.returncode == 2 and "pip install 'enrich-grpc-client[audit]'" in audit.stderr


def test_async_client_enriches_and_streams(server: LoopbackServer, catalogue_dir: Path):
    images = [(p.name, p.read_bytes()) for p in sorted((catalogue_dir / "images").glob("*.jpg"))[:5]]

    async def main():
        async with AsyncEnrichClient(server.target) as client:
            one = await client.enrich(images[0][1], "one", caption_mode="skip")
            streamed = [a async for a in client.enrich_stream([*images, ("bad", b"nope")], caption_mode="skip")]
            with pytest.raises(EnrichError) as raised:
                await client.enrich(b"nope")
            return one, streamed, raised.value

    one, streamed, error = asyncio.run(main())
    assert one.request_id == "one" and one.metadata.article_type.label
    assert len(streamed) == 6 and sum(a.status.code != 0 for a in streamed) == 1
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "IMAGE_UNDECODABLE"


def answers(server: LoopbackServer, code: str, reason: str) -> float:
    return server.server.metrics.items.labels("Enrich", code, reason)._value.get()


def test_unary_calls_are_retried_while_the_model_loads_but_never_for_a_bad_image(bundle_dir: Path,
                                                                                 catalogue_dir: Path):
    server = LoopbackServer(bundle_dir, max_image_mb=0.001)
    try:
        image = png_bytes((20, 20))
        loader = threading.Timer(1.0, server.load)
        loader.start()
        started = time.perf_counter()
        with EnrichClient(server.target, timeout=60, retries=10) as client:  # ~20 s of 2 s pushbacks
            response = client.enrich(image, "patient")  # MODEL_LOADING first: retried after the hint
            assert response.status.code == 0 and time.perf_counter() - started > 0.9
            assert answers(server, "UNAVAILABLE", "MODEL_LOADING") >= 1
            with pytest.raises(EnrichError) as raised:
                client.enrich(b"not an image")
            assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
            big = next((catalogue_dir / "images").glob("*.jpg")).read_bytes() * 2  # over 0.001 MiB
            with pytest.raises(EnrichError) as raised:
                client.enrich(big)
            assert raised.value.reason == "IMAGE_TOO_LARGE"
        assert answers(server, "INVALID_ARGUMENT", "IMAGE_UNDECODABLE") == 1  # sent once: not retried
        assert answers(server, "RESOURCE_EXHAUSTED", "IMAGE_TOO_LARGE") == 1  # pushback -1: not retried
        loader.join()
    finally:
        server.close()
