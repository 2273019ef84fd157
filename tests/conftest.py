"""Shared fixtures: a synthetic catalogue, a tiny trained bundle, and a real gRPC server on loopback."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Exports that servers make at start go here, not into the user's cache (a session-wide folder: reused within
# a run, gone after it).
_EXPORT_CACHE = tempfile.TemporaryDirectory(prefix="enrich-test-exports-")
os.environ["ENRICH_EXPORT_CACHE"] = _EXPORT_CACHE.name

# A TinyViT small enough to train in seconds: the real architecture, one block per stage.
TINY_BACKBONE = '{"embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 4]}'


def tiny_training_options(**overrides: object) -> tuple[dict, dict]:
    """(model arguments, training arguments) of a tiny run, with `overrides` in whichever they belong to."""
    from enrich_trainer.arguments import ModelArguments

    model = dict(backbone_kwargs=TINY_BACKBONE, image_size=32, pretrained="none", decoder="small",
                 decoder_layers=1, decoder_width=32, decoder_heads=2, tokenizer_vocab=300, max_caption_tokens=16)
    train = dict(probe_epochs=1, head_epochs=2, caption_epochs=2, backbone_mode="finetune", progress=False)
    for key, value in overrides.items():
        (model if key in ModelArguments.__dataclass_fields__ else train)[key] = value
    return model, train


def tiny_training_args(data: Path, out: Path, **overrides: object):
    from enrich_trainer.arguments import DataArguments, ModelArguments, TrainArguments

    model, train = tiny_training_options(**overrides)
    return DataArguments(data=str(data)), ModelArguments(**model), TrainArguments(out=str(out), **train)


def tiny_training_command(data: Path, out: Path, **overrides: object) -> list[str]:
    """The same run as `enrich train` in its own process: training beside a server in this process would share
    the CPU with that server's idle thread pools."""
    model, train = tiny_training_options(**overrides)
    flags = [item for key, value in {**model, **train}.items() for item in (f"--{key}", str(value))]
    return [sys.executable, "-m", "enrich_cli.main", "train", "--data", str(data), "--out", str(out), *flags]


@pytest.fixture(scope="session")
def catalogue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from enrich_data.synth import write_catalogue

    return write_catalogue(tmp_path_factory.mktemp("catalogue"), 160, seed=3, image_size=(48, 64), progress=False)


@pytest.fixture(scope="session")
def trained(catalogue_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(bundle directory, the in-memory bundle the trainer returned)."""
    from enrich_trainer.train import train

    out = tmp_path_factory.mktemp("bundle")
    return out, train(*tiny_training_args(catalogue_dir, out, abstain_accuracy=0.9))


@pytest.fixture(scope="session")
def bundle_dir(trained) -> Path:
    return trained[0]


RANDOM_CAPTION_TOKENS = 24  # past 16 tokens, where a compiled kernel reused for another key length goes wrong


@pytest.fixture(scope="session")
def random_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of random weights at small shapes, without an export (copy it to change it). Its decoder writes
    long captions of varied tokens, which exercises every step of the key/value cache, where a trained tiny
    decoder stops at once."""
    import json

    from enrich_model.model import DecoderSpec
    from enrich_trainer.random_bundle import random_bundle

    out = tmp_path_factory.mktemp("random-bundle")
    random_bundle(out, "tiny_vit_5m_224", json.loads(TINY_BACKBONE), 32, DecoderSpec(2, 32, 2, 64), 300,
                  max_new_tokens=RANDOM_CAPTION_TOKENS, seed=1)
    return out


def wait_for(condition, timeout: float = 20.0, failure: str = "condition not reached") -> None:
    """Until `condition()` holds (a test waits for the event, never for a guessed time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


async def until(condition, timeout: float = 10.0) -> None:
    """wait_for, inside an event loop."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), timeout)


def image_bytes(path: Path) -> bytes:
    return path.read_bytes()


def png_bytes(size: tuple[int, int] = (40, 30), colour: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class LoopbackServer:
    """An EnrichServer on 127.0.0.1 with its event loop in a background thread."""

    def __init__(self, bundle: Path, **settings: object) -> None:
        from enrich_server.ports import EnrichServer
        from enrich_server.settings import ServerSettings

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def create() -> EnrichServer:
            return EnrichServer(ServerSettings(**{"model": bundle, "host": "127.0.0.1", "port": 0,
                                                  "grace_seconds": 2, "metrics_port": 0, "http_port": 0,
                                                  **settings}))

        self.server = self.call(create())
        self.port = self.call(self.server.start())["port"]
        self.target = f"127.0.0.1:{self.port}"

    def call(self, coroutine, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def load(self) -> None:
        self.call(self.server.load_model())

    def close(self) -> None:
        self.call(self.server.stop(grace=2))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def server(bundle_dir: Path) -> Iterator[LoopbackServer]:
    # Without the response cache: tests that send the same image expect the model to answer it
    # (test_serving checks the cache on its own server).
    running = LoopbackServer(bundle_dir, max_batch_size=4, max_delay_ms=10, cache_mb=0)
    running.load()
    yield running
    running.close()


@pytest.fixture()
def client(server: LoopbackServer):
    from enrich_client import EnrichClient

    with EnrichClient(server.target, timeout=60) as connected:
        yield connected


NODE_CLIENT = Path(__file__).resolve().parent.parent / "clients" / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """clients/node/enrich.js with its dependencies installed (`npm ci`: exactly the committed lock file)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        if os.environ.get("CI"):
            pytest.fail("CI must run the Node.js client: install node and npm")
        pytest.skip("node and npm are not installed")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True, capture_output=True,
                   timeout=300)
    return NODE_CLIENT / "enrich.js"


def node_command(script: Path, *args: str) -> list[str]:
    return [shutil.which("node"), str(script), *args]
