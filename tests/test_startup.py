"""How `enrich serve` refuses to start: a wrong or changed bundle and a taken port are each one line and exit 2;
the bundle's weights are checked against the hash it recorded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from enrich_model.bundle import load_bundle
from enrich_model.bundle_config import BundleConfig, BundleError, open_bundle

# `enrich serve` in a fresh interpreter that reports, at exit, whether it imported torch.
WATCHED = ("import atexit, sys\n"
           "atexit.register(lambda: print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stdout))\n"
           "from enrich_cli.main import main\nsys.exit(main(sys.argv[1:]))\n")


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WATCHED, "serve", "--host", "127.0.0.1", "--metrics-port", "-1",
                           "--http-port", "-1", *args], capture_output=True, text=True, timeout=300)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("enrich serve: "), result.stderr
    return lines[0]


@pytest.fixture()
def copied(bundle_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy, ignore=shutil.ignore_patterns("openvino"))
    return copy


def test_a_wrong_model_path_is_refused_before_any_model_code_loads(tmp_path: Path):
    result = serve("--model", str(tmp_path / "nothing-here"), "--port", "0")
    assert "is not an Enrich bundle: enrich.json is missing" in one_line(result)
    assert result.stdout.strip() == "NO TORCH"


@pytest.mark.parametrize("flags, words", [
    (("--device", "cuda:7"), "torch sees 0 CUDA device(s) here"),
    (("--precision", "fp16"), "precision fp16 has no hardware support on cpu"),
])
def test_a_device_or_precision_this_machine_lacks_is_one_line(bundle_dir: Path, flags: tuple[str, ...], words: str):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has the hardware")
    result = serve("--model", str(bundle_dir), "--port", "0", "--health-port", "-1", *flags)
    assert words in one_line(result)


def test_changed_weights_are_refused_at_load(copied: Path):
    heads = copied / "heads.safetensors"
    data = bytearray(heads.read_bytes())
    data[-1] ^= 0xFF  # one bit of one weight
    heads.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="the weights do not match the bundle's recorded hash"):
        load_bundle(copied)
    result = serve("--model", str(copied), "--port", "0")
    assert "heads.safetensors or captioner/*.safetensors changed" in one_line(result)
    assert result.stdout.strip() == "NO TORCH"


def test_a_missing_weight_file_is_refused(copied: Path):
    (copied / "heads.safetensors").unlink()
    with pytest.raises(BundleError, match=r"incomplete bundle, heads\.safetensors missing"):
        open_bundle(copied)


def test_a_bundle_written_before_the_full_hash_is_checked_by_its_version(copied: Path):
    config = json.loads((copied / "enrich.json").read_text())
    del config["weights_sha256"]
    (copied / "enrich.json").write_text(json.dumps(config))
    assert open_bundle(copied).model_version == config["model_version"]  # its 12 hex digits still match
    config["model_version"] = config["model_version"][:-1] + ("0" if config["model_version"][-1] != "0" else "1")
    (copied / "enrich.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="do not match"):
        open_bundle(copied)


@pytest.mark.parametrize("flag", ["--port", "--http-port", "--metrics-port", "--health-port"])
def test_a_taken_port_is_one_line_and_exit_2(bundle_dir: Path, flag: str):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": "0", "--http-port": "0", "--metrics-port": "0", "--health-port": "0", flag: str(port)}
        result = subprocess.run([sys.executable, "-c", WATCHED, "serve", "--model", str(bundle_dir), "--host",
                                 "127.0.0.1", *[x for item in ports.items() for x in item]],
                                capture_output=True, text=True, timeout=300)
    line = one_line(result)
    assert f"cannot listen on 127.0.0.1:{port} for {flag}" in line and "in use" in line, line
    assert result.stdout.strip() == "NO TORCH"  # said before any model code loads


def test_a_port_taken_between_the_check_and_the_bind_is_still_one_clear_error(bundle_dir: Path, monkeypatch):
    import asyncio

    from enrich_server import ports
    from enrich_server.ports import EnrichServer, PortError
    from enrich_server.settings import ServerSettings

    monkeypatch.setattr(ports, "check_port_free", lambda *_: None)  # as if taken just after the check

    async def start_on(port: int) -> None:
        server = EnrichServer(ServerSettings(model=bundle_dir, host="127.0.0.1", port=port, http_port=-1,
                                             metrics_port=-1))
        with pytest.raises(PortError, match=f"cannot listen on 127.0.0.1:{port} for --port"):
            await server.start()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        asyncio.run(start_on(taken.getsockname()[1]))


def test_the_recorded_hash_is_the_weights_own(copied: Path):
    config = BundleConfig.read(copied)
    files = sorted([copied / "heads.safetensors", *(copied / "captioner").glob("*.safetensors")])
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    assert config.weights_sha256 == digest and config.model_version.endswith(digest[:12])
    config.verify_weights(copied)
    captioner = next((copied / "captioner").glob("*.safetensors"))
    data = bytearray(captioner.read_bytes())
    data[-1] ^= 0x01  # one bit of the decoder's last weight
    captioner.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="do not match"):
        config.verify_weights(copied)


ARENAS_SCRIPT = """
import ctypes, sys, threading
from enrich_server.allocator import limit_allocator
print(limit_allocator() if sys.argv[1] == "limit" else "unset", flush=True)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
together = threading.Barrier(8)
def allocate():
    together.wait()
    [libc.malloc(4096) for _ in range(2000)]  # ctypes lets go of the GIL: the threads allocate at once
threads = [threading.Thread(target=allocate) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
libc.malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_server_limits_its_malloc_arenas_itself(monkeypatch):
    from enrich_server import app
    from enrich_server.allocator import ARENAS

    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    arenas = {}
    for mode in ("unset", "limit"):
        done = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, mode], capture_output=True, text=True, timeout=60,
                              env=environment)
        assert done.returncode == 0, done.stderr
        arenas[mode] = done.stderr.count("Arena ")
    assert arenas["limit"] <= ARENAS < arenas["unset"]  # 8 threads allocating at once: an arena each, unless limited
    called = []
    monkeypatch.setattr(app, "limit_allocator", lambda: called.append("limited"))
    assert app.main(["--model", "/nowhere"]) == 2 and called == ["limited"]  # `enrich serve` sets it first
