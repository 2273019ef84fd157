"""Options declared once: each is a dataclass field carrying its flag, environment variable, default, choices
and help, so the command line, the environment, `--help` and the README's table all come from one place.

    --max-batch-size 16   or   ENRICH_MAX_BATCH_SIZE=16      (a flag wins over the environment)

`RuntimeOptions` is how a bundle runs (device, backend, precision, threads): `enrich serve` extends it, and
`enrich evaluate` takes it as it is, so both default alike. Standard library only: `--help` must answer
without loading a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Mapping
from pathlib import Path

ENV_PREFIX = "ENRICH_"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class BackendError(RuntimeError):
    """A backend or precision was asked for that this machine or installation cannot run."""


def option(default: object, help: str, *, group: str = "general", choices: tuple[str, ...] = (),
           flag: bool = True, shown_default: str | None = None) -> typing.Any:
    """A declared option. `flag=False`: environment only (a secret, which a flag would show in `ps`);
    `shown_default`: how the default reads in help and the README when its value says little (0 = ...)."""
    metadata = {"help": help, "group": group, "choices": choices, "flag": flag, "shown_default": shown_default}
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def env_name(field: dataclasses.Field) -> str:
    return ENV_PREFIX + field.name.upper()


def declared(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def value_type(cls: type, field: dataclasses.Field) -> type:
    """int, float, str, bool or Path (Optional unwrapped)."""
    hint = typing.get_type_hints(cls)[field.name]
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return kinds[0]


def parse_bool(text: str) -> bool:
    """The one reading of a yes/no setting, for flags and environment variables alike."""
    word = text.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"{text!r} is not a yes/no value (use one of {', '.join(TRUE_WORDS + FALSE_WORDS)})")


def parse_value(kind: type, text: str) -> object:
    if kind is bool:
        return parse_bool(text)
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
    return Path(text) if kind is Path else text


def shown_default(field: dataclasses.Field) -> str:
    if field.metadata["shown_default"] is not None:
        return field.metadata["shown_default"]
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    return "none" if field.default is None else str(field.default)


def add_options(parser: argparse.ArgumentParser, cls: type, environ: Mapping[str, str] | None = None,
                groups: tuple[str, ...] = ()) -> None:
    """One flag per declared field of `cls`, grouped (`groups` first, in that order), with its default taken
    from the environment when set there."""
    environ = os.environ if environ is None else environ
    made = {name: parser.add_argument_group(name) for name in groups}  # argparse's argument groups, by name
    for field in in_groups(cls, groups):
        kind, env = value_type(cls, field), env_name(field)
        default, shown = field.default, shown_default(field)
        if env in environ:
            shown = f"{environ[env]} from {env}"
            try:
                default = parse_value(kind, environ[env])
            except ValueError as error:
                parser.error(f"{env}: {error}")
            if field.metadata["choices"] and default not in field.metadata["choices"]:
                parser.error(f"{env}: {default!r} is not one of {', '.join(field.metadata['choices'])}")
        if not field.metadata["flag"]:
            parser.set_defaults(**{field.name: default})
            continue
        group = made.get(field.metadata["group"]) or made.setdefault(field.metadata["group"],
                                                                     parser.add_argument_group(field.metadata["group"]))
        text = f"{field.metadata['help']} (default: {shown}; env {env})"
        arguments: dict = {"dest": field.name, "default": default, "help": text.replace("%", "%%")}
        if kind is bool:
            arguments["action"] = argparse.BooleanOptionalAction
        else:
            arguments["type"] = lambda value, kind=kind: parse_value(kind, value)
            arguments["metavar"] = field.name.upper() if not field.metadata["choices"] else None
            arguments["choices"] = field.metadata["choices"] or None
        group.add_argument(flag_name(field), **arguments)


def from_arguments(cls: type, arguments: argparse.Namespace, **extra: object):
    values = {f.name: getattr(arguments, f.name) for f in declared(cls)}
    return cls(**values, **extra)


def in_groups(cls: type, groups: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The declared fields, those of `groups` first and in that order, the others after."""
    order = {name: n for n, name in enumerate(groups)}
    return sorted(declared(cls), key=lambda f: order.get(f.metadata["group"], len(order)))


def markdown_table(cls: type, groups: tuple[str, ...] = ()) -> str:
    """The README's table of every option: flag, environment variable, default, what it does."""
    rows = ["| flag | environment | default | what |", "| --- | --- | --- | --- |"]
    for field in in_groups(cls, groups):
        flag = f"`{flag_name(field)}`" if field.metadata["flag"] else "(none: environment only)"
        if value_type(cls, field) is bool and field.metadata["flag"]:
            flag = f"`{flag_name(field)}` / `--no-{flag_name(field)[2:]}`"
        what = field.metadata["help"]
        if field.metadata["choices"]:
            what += " (" + " \\| ".join(field.metadata["choices"]) + ")"
        rows.append(f"| {flag} | `{env_name(field)}` | {shown_default(field)} | {what} |")
    return "\n".join(rows)


@dataclasses.dataclass
class RuntimeOptions:
    """How a bundle runs: where, on which encoder backend, at which precision, with how many threads."""

    device: str = option("auto", "auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda, cuda:1, ...",
                         group="model")
    backend: str = option("auto", "the encoder's inference backend; auto = OpenVINO on CPU when installed, else "
                          "torch (eager, channels_last)", group="model", choices=("auto", "torch", "openvino"))
    precision: str = option("auto", "the encoder's arithmetic; auto = bf16 where the hardware has it (AVX-512 "
                            "BF16 or AMX CPUs, recent GPUs), fp16 on older GPUs, else fp32 (exact)", group="model",
                            choices=("auto", "fp32", "bf16", "fp16"))
    threads: int = option(0, "CPU budget, read from the cgroup quota and affinity (a pod's limits.cpu), not the "
                          "host's core count", group="model", shown_default="the process's CPU limit")
    compile: bool = option(False, "torch backend: torch.compile the encoder (GPUs; minutes at start-up)",
                           group="model")
    caption_beams: int = option(3, "beams of CAPTION_MODE_BEAM_SEARCH (1 to 8)", group="model")
    export_cache: Path | None = option(  # noqa: RUF009 (option() is dataclasses.field(), as above)
        None, "where a server writes the OpenVINO export it makes at start when neither the bundle nor this folder "
        "has one (the bundle itself is never written)", group="model", shown_default="~/.cache/enrich/exports")
