"""The code's own shape: small functions, no reaching into other objects' private parts, one version."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60
GENERATED = ROOT / "clients" / "python" / "enrich"


def test_no_function_over_sixty_lines():
    long = []
    for folder in ("server", "model", "trainer", "clients", "datatools", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if GENERATED in path.parents:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_no_private_member_access_across_objects_outside_tests():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "SLF001", "--output-format", "json",
                           "--exclude", "tests", str(ROOT)], capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr  # 1: findings; anything else: ruff did not run
    found = json.loads(done.stdout)
    assert [f"{f['filename']}:{f['location']['row']} {f['message']}" for f in found] == []


def test_one_version_for_the_service_the_client_the_chart_and_the_node_example():
    import enrich_model
    from enrich_client import __version__ as client_version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"] and "version" in client["dynamic"]
    chart = (ROOT / "charts" / "enrich" / "Chart.yaml").read_text()
    node = json.loads((ROOT / "clients" / "node" / "package.json").read_text())
    versions = {"package": enrich_model.__version__, "client": client_version, "node": node["version"],
                "chart": re.search(r"^version: (\S+)", chart, re.MULTILINE).group(1),
                "app": re.search(r'^appVersion: "?([^"\s]+)', chart, re.MULTILINE).group(1)}
    assert len(set(versions.values())) == 1, versions
