"""`enrich serve`'s settings as declared once: flags, environment variables, defaults, choices and help, the
README's table, and the CPU budget read from cgroups. Nothing here loads a model."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from enrich_model.backends import cpu_budget
from enrich_model.options import declared, env_name, flag_name, markdown_table
from enrich_server.settings import GROUPS, ServerSettings, build_parser, parse_args

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_has_a_flag_and_an_environment_variable():
    fields = declared(ServerSettings)
    assert len(fields) == len(dataclasses.fields(ServerSettings))  # nothing undeclared
    help_text = build_parser({}).format_help()
    for field in fields:
        if field.name == "auth_tokens":  # a secret: environment only, never a flag that `ps` would show
            assert not field.metadata["flag"] and not re.search(r"--auth-tokens\b(?!-)", help_text)
            continue
        assert flag_name(field) in help_text, field.name
        assert f"env {env_name(field)})" in " ".join(help_text.split()), field.name  # with its default
    assert "(default: 8; env ENRICH_MAX_BATCH_SIZE)" in " ".join(help_text.split())


def test_the_environment_sets_defaults_and_a_flag_wins():
    environ = {"ENRICH_MODEL": "/models/b", "ENRICH_MAX_BATCH_SIZE": "16", "ENRICH_MAX_QUEUE": "256",
               "ENRICH_MAX_IMAGE_MB": "8.5", "ENRICH_REFLECTION": "off", "ENRICH_COMPILE": "YES",
               "ENRICH_BACKEND": "torch", "ENRICH_AUTH_TOKENS": "a,b"}
    settings = parse_args([], environ)
    assert (settings.max_batch_size, settings.max_queue, settings.max_image_mb) == (16, 256, 8.5)
    assert settings.model == Path("/models/b") and settings.backend == "torch"
    assert settings.reflection is False and settings.compile is True and settings.auth_tokens == "a,b"
    flagged = parse_args(["--max-batch-size", "4", "--reflection", "--no-compile"], environ)
    assert (flagged.max_batch_size, flagged.reflection, flagged.compile) == (4, True, False)
    assert parse_args(["--model", "x"], {}).max_batch_size == ServerSettings.max_batch_size == 8
    assert "a,b" not in repr(settings)


@pytest.mark.parametrize("environ, complaint", [
    ({"ENRICH_PORT": "fifty"}, "ENRICH_PORT: 'fifty' is not a whole number"),
    ({"ENRICH_REFLECTION": "maybe"}, "ENRICH_REFLECTION: 'maybe' is not a yes/no value"),
    ({"ENRICH_BACKEND": "cuda"}, "ENRICH_BACKEND: 'cuda' is not one of auto, torch, openvino"),
    ({"ENRICH_GRACE_SECONDS": "soon"}, "ENRICH_GRACE_SECONDS: 'soon' is not a number"),
])
def test_a_wrong_environment_variable_is_one_clear_error(environ: dict, complaint: str, capsys):
    with pytest.raises(SystemExit) as raised:
        parse_args(["--model", "x"], environ)
    assert raised.value.code == 2
    assert complaint in capsys.readouterr().err


def test_the_readme_table_is_the_declaration():
    table = markdown_table(ServerSettings, GROUPS)
    assert table in (ROOT / "README.md").read_text(), "README's table differs: python -m enrich_server.settings"
    rows = table.splitlines()[2:]
    assert len(rows) == len(declared(ServerSettings))
    assert re.search(r"^\| `--max-queue` \| `ENRICH_MAX_QUEUE` \| 128 \|", table, re.MULTILINE)


def test_help_answers_without_loading_a_model_or_grpc():
    code = ("import sys\nfrom enrich_cli.main import main\n"
            "try:\n    main(['serve', '--help'])\nexcept SystemExit as done:\n    code = done.code\n"
            "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'grpc', 'openvino'}\n"
            "print('HEAVY', sorted(heavy), file=sys.stderr)\nraise SystemExit(code)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--max-batch-size" in result.stdout
    assert "HEAVY []" in result.stderr, result.stderr


@pytest.mark.parametrize("files, affinity, expected", [
    ({}, 8, 8),  # no cgroup limit: the CPUs this process may run on
    ({"cpu.max": "max 100000"}, 8, 8),  # v2, unlimited
    ({"cpu.max": "200000 100000"}, 8, 2),  # v2: limits.cpu = 2
    ({"cpu.max": "150000 100000"}, 8, 1),  # v2: 1.5 CPUs round down
    ({"cpu.max": "50000 100000"}, 8, 1),  # v2: half a CPU is still one thread
    ({"cpu.max": "400000 100000"}, 2, 2),  # affinity below the quota wins
    ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 8, 3),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 8, 8),  # v1, unlimited
    ({"cpu.max": "garbage"}, 4, 4),  # unreadable: no limit assumed
])
def test_the_cpu_budget_comes_from_the_cgroup_quota_and_affinity(tmp_path: Path, files: dict, affinity: int,
                                                                  expected: int):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert cpu_budget(tmp_path, affinity) == expected
    settings = ServerSettings(model=Path("x"))
    assert settings.threads == 0 and settings.thread_budget[0] >= 1
