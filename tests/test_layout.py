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


PACKAGES = {"model": "enrich_model", "datatools": "enrich_data", "server": "enrich_server",
            "trainer": "enrich_trainer", "clients/python/enrich_client": "enrich_client", "cli": "enrich_cli"}


def module_imports() -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports when it is imported (module level, outside
    `if TYPE_CHECKING:`; imports inside functions run later and cannot close a cycle at import time)."""
    graph: dict[str, set[str]] = {}
    imported: dict[str, list[tuple[str, list[str]]]] = {}  # module -> (imported module, names from it)
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
            graph[name], imported[name] = set(), []
            for node in top_level_imports(ast.parse(path.read_text()).body):
                if isinstance(node, ast.Import):
                    imported[name] += [(alias.name, []) for alias in node.names]
                    continue
                base = node.module or ""
                if node.level:
                    anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{anchor}.{base}" if base else anchor
                imported[name].append((base, [alias.name for alias in node.names]))
    for name, sources in imported.items():
        for base, names in sources:
            submodules = {f"{base}.{n}" for n in names} & set(graph)
            # `from package import module` needs the module; the package itself is already being imported
            graph[name] |= submodules or ({base} & set(graph))
        graph[name].discard(name)
    return graph


def top_level_imports(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            yield from top_level_imports(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from top_level_imports(node.body)


def test_no_import_cycles():
    graph = module_imports()
    assert "enrich_server.service" in graph["enrich_server.stream"]  # the graph sees relative imports
    cycles, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append([*path[path.index(name):], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


# Where Fashion Product Images' column names may be written: its own defaults, the synthetic generators that draw
# it and the demo that shows it. Everywhere else the schema comes from the bundle or the catalogue.
FASHION_PLACES = {"model/fashion.py", "datatools/synth.py", "datatools/corrupt.py", "datatools/simulated_answers.py",
                  "trainer/random_bundle.py",
                  "cli/demo.py"}


def test_no_catalogue_column_is_a_constant_of_the_engine():
    from enrich_model.fashion import FASHION_SCHEMA
    from enrich_model.schema import ROLES

    names = {*FASHION_SCHEMA.names, FASHION_SCHEMA.caption} - set(ROLES)  # "gender" is a role too
    found = []
    for folder in ("server", "model", "trainer", "clients/python/enrich_client", "datatools", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if str(path.relative_to(ROOT)) in FASHION_PLACES:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                # a name, or a key built on one ("eval_acc_articleType"); prose in docstrings may cite them
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                        node.value in names or (" " not in node.value and any(n in node.value for n in names))):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []


def imported_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after `statement`."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split())


def test_the_server_needs_no_client_sdk_and_the_client_no_grpc_until_used():
    server = imported_after("import enrich_server.app, enrich_server.messages, enrich_server.http_api, "
                            "enrich_model.pipeline, enrich_data.catalogue")
    assert "enrich_client" not in server and "enrich_contract" in server
    assert "grpc" not in imported_after("import enrich_client")
    assert not {"grpc", "numpy", "torch"} & imported_after(
        "import enrich_contract.wire, enrich_contract.posterior, enrich_contract.tables")
    assert "grpc" in imported_after("from enrich_client import EnrichClient")
