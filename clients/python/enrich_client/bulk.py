"""`enrich-client bulk`: a whole catalogue through several streams, into JSON lines or CSV, resumable.

    enrich-client bulk photos/ --out results.jsonl                # a folder, recursively, by extension
    enrich-client bulk 'shoots/**/*.jpg' manifest.csv --out results.csv --streams 4

Every input image gets exactly one row. A rerun with the same --out skips what the file already holds,
so an interrupted run (Ctrl-C, a killed process, a lost server) continues where it stopped; at most
the images in flight are sent again. A server that restarts or drains mid-run is waited for, with
backoff. A bad image is a row with its reason, never the end of the run. The options a run asked for are
kept beside the output (OUT.bulk.json): a rerun with other options is refused unless told to mix them.

Exit status: 0 when every input image has an OK row; 1 when some row failed (in this run or an earlier one)
or the run stopped; 2 when an input matches no image, or the options do not match the output's.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from enrich.v1 import enrich_pb2
from enrich_contract import wire as contract
from enrich_contract.wire import to_json

from .client import EnrichClient, EnrichError
from .sources import NAME_COLUMN, collect
from .streaming import BulkRun, code_name

KEY = enrich_pb2.EnrichResponse.DESCRIPTOR.fields_by_name["request_id"].json_name  # requestId
CONFIDENCE = "Confidence"  # the suffix of a value column's confidence column
STATUS_COLUMNS = ("status", "reason", "message")
IMAGE_COLUMNS = ("width", "height", "format", "modelVersion")


@dataclass(frozen=True)
class CsvLayout:
    """A CSV row per image: one column pair per attribute of the served model's schema (named as the catalogue
    names it), the caption's pair, the image's size. A multi-valued attribute's cell holds its listed values
    joined by "|", and its confidence column theirs."""

    attributes: tuple[str, ...]
    multi: frozenset[str] = frozenset()
    caption: str = NAME_COLUMN

    @classmethod
    def of(cls, info: enrich_pb2.ModelInfo | None) -> CsvLayout:
        """The served model's columns; without a model description, Fashion Product Images' typed ones."""
        if info is None or not info.attributes:
            return cls(tuple(contract.TYPED_ATTRIBUTES))
        return cls(tuple(a.name for a in info.attributes), frozenset(a.name for a in info.attributes
                                                                     if a.kind == "multi"),
                   info.schema.caption_column or NAME_COLUMN)

    @property
    def columns(self) -> list[str]:
        values = [*self.attributes, self.caption]
        return [KEY, *STATUS_COLUMNS, *[c for a in values for c in (self.column(a), self.column(a) + CONFIDENCE)],
                *IMAGE_COLUMNS]

    @staticmethod
    def column(name: str) -> str:
        """An attribute's (or the caption's) value column: its own name, unless one of the row's other columns
        has it (an attribute called `format` or `status`), then with "Value" after it."""
        return f"{name}Value" if name in (KEY, *STATUS_COLUMNS, *IMAGE_COLUMNS) else name



# --- output ------------------------------------------------------------------------------------------
def csv_row(response: enrich_pb2.EnrichResponse, layout: CsvLayout | None = None) -> dict[str, object]:
    layout = layout or CsvLayout.of(None)
    status = response.status
    row: dict[str, object] = {KEY: response.request_id,
                              "status": grpc.StatusCode.OK.name if not status.code else code_name(status.code),
                              "reason": enrich_pb2.ErrorReason.Name(status.reason) if status.reason else "",
                              "message": "" if not status.code else status.message,
                              "modelVersion": response.model_version}
    if not status.code:
        metadata = response.metadata
        for attribute in layout.attributes:
            prediction = metadata.attributes.get(attribute)
            if prediction is None and attribute in contract.TYPED_ATTRIBUTES:  # a server before the generic map
                prediction = getattr(metadata, contract.TYPED_ATTRIBUTES[attribute])
            if prediction is None:
                continue
            column = layout.column(attribute)
            if attribute in layout.multi:
                row[column] = "|".join(v.label for v in prediction.values)
                row[column + CONFIDENCE] = "|".join(f"{v.confidence:.4f}" for v in prediction.values)
            else:
                row[column] = prediction.label
                row[column + CONFIDENCE] = round(prediction.confidence, 4)
        if metadata.HasField("product_display_name"):
            caption = layout.column(layout.caption)
            row[caption] = metadata.product_display_name.text
            row[caption + CONFIDENCE] = round(metadata.product_display_name.confidence, 4)
        row.update(width=metadata.image.width, height=metadata.image.height, format=metadata.image.format)
    return row


class OptionsMismatch(ValueError):
    """The output was made with other options than this run asks for."""


class Output:
    """Appends one row per image, flushed as it is written; on open, reads the keys already done (and which
    of them failed) and cuts a last line that a killed run left half-written, so the file stays valid."""

    def __init__(self, path: Path, fmt: str, layout: CsvLayout | None = None) -> None:
        self.path, self.format = path, fmt
        self.layout = layout or CsvLayout.of(None)
        self.done: set[str] = set()
        self.failed: set[str] = set()  # rows already there whose image failed
        if path.exists():
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                os.truncate(path, len(complete))  # in place: an interruption now cannot lose earlier rows
            for key, ok in self._rows(complete.decode("utf-8")):
                self.done.add(key)
                if not ok:
                    self.failed.add(key)
        fresh = not path.exists() or path.stat().st_size == 0
        if fmt == "csv" and not fresh:
            with open(path, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
            if header != self.layout.columns:
                raise OptionsMismatch(f"{path} has other columns than this model's ({', '.join(header[4:8])}, ...): "
                                      "it was written for another model; choose another --out")
        self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self.csv = csv.DictWriter(self.file, self.layout.columns, extrasaction="ignore") if fmt == "csv" else None
        if self.csv and fresh:
            self.csv.writeheader()
        self.lock = threading.Lock()

    def _rows(self, text: str) -> Iterator[tuple[str, bool]]:
        """(key, OK?) of every complete row."""
        if self.format == "csv":
            for row in csv.DictReader(io.StringIO(text)):
                if KEY not in row:
                    raise OptionsMismatch(f"{self.path} is not a CSV this version of enrich-client wrote (no "
                                          f"{KEY} column): choose another --out")
                yield row[KEY], row["status"] == grpc.StatusCode.OK.name
        else:
            for line in filter(str.strip, text.split("\n")):
                row = json.loads(line)
                if KEY not in row:
                    raise OptionsMismatch(f"{self.path} holds rows without {KEY}: not written by this version of "
                                          "enrich-client; choose another --out")
                yield row[KEY], not row["status"]["code"]

    def check_options(self, options: dict, mixed: bool) -> None:
        """Refuses to add rows made with other options than the rows already there, unless `mixed`; then
        records this run's options."""
        record = self.path.with_name(self.path.name + ".bulk.json")
        if self.done and not mixed:
            if not record.exists():
                raise OptionsMismatch(f"{self.path} has rows but no {record.name}, so the options that made them "
                                      "are unknown. Choose another --out, or add --mixed-options to resume anyway")
            before = json.loads(record.read_text(encoding="utf-8"))
            changed = {k: (before.get(k), v) for k, v in options.items() if before.get(k) != v}
            if changed:
                words = ", ".join(f"{k} {shown(old)} -> {shown(new)}" for k, (old, new) in changed.items())
                raise OptionsMismatch(f"{self.path} was made with other options ({words}): its rows would mix "
                                      "them. Choose another --out, or add --mixed-options to resume anyway")
        record.write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")

    def write(self, response: enrich_pb2.EnrichResponse) -> None:
        with self.lock:
            if self.csv:
                self.csv.writerow(csv_row(response, self.layout))
            else:
                self.file.write(json.dumps(to_json(response), ensure_ascii=False) + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()



def shown(option: object) -> str:
    """An option's value for people: unset is the server's default."""
    if option is None or option == []:
        return "the server's default" if option is None else "none"
    return ", ".join(map(str, option)) if isinstance(option, list) else str(option)


def output_format(path: Path, given: str | None) -> str:
    if given:
        return given
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def included(args) -> list[str]:
    """The include_* fields the command line asked for (`--include-palette`, ...)."""
    return [flag for flag in contract.INCLUDE_FLAGS if getattr(args, flag, False)]


def run_options(args) -> dict:
    """What decides a row's content, recorded beside the output (unset: the server's default)."""
    mode = contract.caption_mode(args.caption_mode)
    return {"top_k": args.top_k or None, "caption_mode": contract.caption_mode_name(mode) if mode else None,
            "format": output_format(Path(args.out), args.format), "include": included(args)}


def bulk_main(client: EnrichClient, args) -> int:
    out = Path(args.out)
    layout = None
    if output_format(out, args.format) == "csv":  # its columns are the served model's attributes
        try:
            client.wait_until_serving(args.retry_seconds)
            layout = CsvLayout.of(client.model_info())
        except (EnrichError, TimeoutError) as error:
            print(f"enrich-client bulk: the CSV's columns are the served model's, and no server answered: {error}",
                  file=sys.stderr)
            return 1
    try:
        sources = collect(args.inputs)
        output = Output(out, output_format(out, args.format), layout)
    except (OSError, ValueError) as error:
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    try:
        output.check_options(run_options(args), args.mixed_options)
    except (OSError, ValueError) as error:
        output.close()
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    run = BulkRun(client, sources, output, args.streams, args.top_k, args.caption_mode, args.sidecars,
                  args.retry_seconds, include=included(args))
    return run_with_progress(client, run, output, "bulk", args.quiet)


def run_with_progress(client: EnrichClient, run: BulkRun, output: Output, command: str, quiet: bool) -> int:
    """Runs `run` with a progress bar; Ctrl-C stops it resumably. The exit status: 0 when every image has an OK
    row, 1 when some row failed or the run stopped, 130 when interrupted."""
    from tqdm import tqdm

    bar = tqdm(total=run.summary.total, initial=0, unit="img", desc=command, file=sys.stderr, disable=quiet,
               dynamic_ncols=True)

    def answered(response: enrich_pb2.EnrichResponse) -> None:
        bar.update()
        if response.status.code:
            bar.set_postfix(failed=run.summary.failed, refresh=False)

    run.on_answer = answered
    with contextlib.suppress(EnrichError):  # not serving yet: the streams wait for it; gRPC checks sizes then
        run.max_image_bytes = client.model_info().limits.max_image_bytes
    bar.update(run.summary.skipped)
    try:
        summary = run.run()
    except KeyboardInterrupt:
        run.cancel()
        bar.close()
        output.close()
        print(f"\ninterrupted: {run.summary.line()}\nrun the same command again to continue", file=sys.stderr)
        return 130
    except EnrichError as error:
        bar.close()
        output.close()
        print(f"enrich-client {command}: stopped: {error}\n{run.summary.line()}", file=sys.stderr)
        return 1
    bar.close()
    output.close()
    print(summary.line(), file=sys.stderr)
    return 0 if summary.complete else 1
