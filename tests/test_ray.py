"""`--engine ray`: bulk and audit as Ray Data jobs on a local cluster (2 CPUs), against the gRPC path's answers:
actors that answer from the bundle, and actors that call the server."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.dataset as ds
import pytest

from .conftest import LoopbackServer, wait_for

pytest.importorskip("ray")

CLIENT = [sys.executable, "-m", "enrich_client.cli"]
INCLUDES = ["--include-embedding", "--include-signature"]
RAY = ["--engine", "ray", "--ray-threads", "1", "--ray-batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A local cluster of 2 CPUs, started once; the commands join it. Without token authentication: the cluster
    and its clients are this test's processes only."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = str(Path(sys.executable).with_name("ray"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                        "--disable-usage-stats"], check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
        subprocess.Popen([ray, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def answers(folder: Path) -> dict[str, dict]:
    table = ds.dataset(folder, format="parquet").to_table()
    rows = table.to_pylist()
    assert len(rows) == len({row["requestId"] for row in rows}), "an id written twice"
    return {row["requestId"]: row for row in rows}


def assert_same_answers(ours: dict[str, dict], reference: dict[str, dict], attributes: list[str]) -> None:
    """The same labels and captions; probabilities within 1e-3 (batches of other sizes)."""
    assert set(ours) == set(reference)
    for key, row in ours.items():
        expected = reference[key]
        assert row["code"] == expected["code"] == 0, row["message"]
        for attribute in attributes:
            assert row[attribute]["label"] == expected[attribute]["label"], (key, attribute)
            assert abs(row[attribute]["confidence"] - expected[attribute]["confidence"]) <= 1e-3
        assert row["productDisplayName"] == expected["productDisplayName"]
        assert row["productHash"] == expected["productHash"]


@pytest.fixture(scope="module")
def images(catalogue_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A manifest of 64 of the catalogue's images."""
    manifest = tmp_path_factory.mktemp("manifest") / "images.csv"
    paths = sorted((catalogue_dir / "images").glob("*.jpg"))[:64]
    manifest.write_text("path\n" + "".join(f"{path}\n" for path in paths), encoding="utf-8")
    return str(manifest)


@pytest.fixture(scope="module")
def grpc_answers(server: LoopbackServer, images: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("grpc") / "answers"
    done = subprocess.run([*CLIENT, "--target", server.target, "bulk", images, "--out", str(out), "--quiet",
                           *INCLUDES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return answers(out)


def attributes_of(rows: dict[str, dict]) -> list[str]:
    fixed = {"requestId", "code", "reason", "message", "modelVersion", "width", "height", "format", "sizeBytes",
             "productDisplayName", "palette", "perceptualHash", "productHash", "colourFingerprint", "embedding",
             "findings", "errorPrior"}
    return [name for name in next(iter(rows.values())) if name not in fixed]


def test_a_killed_run_and_a_killed_worker_lose_nothing_and_write_nothing_twice(
        ray_address: str, server: LoopbackServer, bundle_dir: Path, images: str, grpc_answers: dict, tmp_path: Path):
    """The first run answers from the bundle and is killed; the resumed run calls the fleet, and loses a worker."""
    out = tmp_path / "ray"
    command = [*CLIENT, "--target", server.target, "bulk", images, "--out", str(out), *INCLUDES, *RAY,
               "--ray-address", ray_address, "--part-rows", "8"]
    first = subprocess.Popen([*command, "--model", str(bundle_dir)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_for(lambda: any(out.glob("part-*.parquet")), 180, "no part written")
    first.kill()  # the driver, mid-run: what it held in memory has no row yet
    first.wait()
    assert len(answers(out)) < len(grpc_answers)
    started = time.time()
    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before = len(list(out.glob("part-*.parquet")))

    def worker() -> psutil.Process | None:
        for process in psutil.process_iter(["cmdline", "create_time"]):
            if "MapWorker" in " ".join(process.info["cmdline"] or []) and process.info["create_time"] >= started:
                return process
        return None

    wait_for(lambda: worker() is not None and len(list(out.glob("part-*.parquet"))) > before, 180, "no worker")
    worker().kill()  # a worker mid-run: Ray restarts the actor and runs its batch again
    _, errors = second.communicate(timeout=300)
    assert second.returncode == 0, errors
    assert "(ray)" in errors
    ours = answers(out)
    assert_same_answers(ours, grpc_answers, attributes_of(ours))


def findings(folder: Path) -> dict[tuple[str, str], dict]:
    with open(folder / "findings.csv", newline="", encoding="utf-8") as handle:
        return {(row["id"], row["attribute"]): row for row in csv.DictReader(handle)}


def test_an_audit_on_ray_finds_what_the_grpc_audit_finds(ray_address: str, server: LoopbackServer, bundle_dir: Path,
                                                        tmp_path: Path):
    from enrich_data.synth import write_catalogue

    catalogue = write_catalogue(tmp_path / "catalogue", 64, seed=4, image_size=(48, 64), progress=False)
    audits, ends = {}, {}
    for name, extra in {"grpc": [], "ray": [*RAY, "--model", str(bundle_dir), "--ray-address", ray_address]}.items():
        audits[name] = tmp_path / name
        done = subprocess.run([*CLIENT, "--target", server.target, "audit", str(catalogue), "--out",
                               str(audits[name]), "--quiet", *extra], capture_output=True, text=True, timeout=300)
        ends[name] = (done.returncode, json.loads((audits[name] / "summary.json").read_text())["answered"])
    assert ends["grpc"] == ends["ray"] and ends["ray"][1] >= 60, ends
    grpc, ray = findings(audits["grpc"]), findings(audits["ray"])
    assert set(grpc) == set(ray) and len(grpc) > 400
    for key, row in ray.items():
        assert (row["kind"], row["predicted"]) == (grpc[key]["kind"], grpc[key]["predicted"]), key
        assert abs(float(row["p_wrong"]) - float(grpc[key]["p_wrong"])) <= 1e-3, key
    pairs = [(audits[name] / "duplicates.csv").read_text().splitlines()[1:] for name in audits]
    assert sorted(line.split(",")[:2] for line in pairs[0]) == sorted(line.split(",")[:2] for line in pairs[1])
