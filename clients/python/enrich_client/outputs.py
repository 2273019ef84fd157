"""Where bulk and audit write their answers: one row per image, flushed as written, resumable. JSON lines (the
answer as every Enrich surface writes it) or CSV (the served model's columns, one pair per attribute)."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from enrich.v1 import enrich_pb2
from enrich_contract import wire as contract
from enrich_contract.wire import to_json

from .sources import NAME_COLUMN
from .streaming import code_name

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
def prediction_of(metadata: enrich_pb2.Metadata, attribute: str) -> enrich_pb2.Prediction | None:
    """An answer's prediction of `attribute`: from the map, or a typed field (servers before the map)."""
    prediction = metadata.attributes.get(attribute)
    if prediction is None and attribute in contract.TYPED_ATTRIBUTES:
        prediction = getattr(metadata, contract.TYPED_ATTRIBUTES[attribute])
    return prediction


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
            prediction = prediction_of(metadata, attribute)
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
        record_options(self.path.with_name(self.path.name + ".bulk.json"), self.path, bool(self.done), options,
                       mixed)

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


def record_options(record: Path, path: Path, has_rows: bool, options: dict, mixed: bool) -> None:
    """Refuses to add rows to `path` made with other options than the rows already there, unless `mixed`; then
    records this run's options in `record`."""
    if has_rows and not mixed:
        if not record.exists():
            raise OptionsMismatch(f"{path} has rows but no {record.name}, so the options that made them "
                                  "are unknown. Choose another --out, or add --mixed-options to resume anyway")
        before = json.loads(record.read_text(encoding="utf-8"))
        changed = {k: (before.get(k), v) for k, v in options.items() if before.get(k) != v}
        if changed:
            words = ", ".join(f"{k} {shown(old)} -> {shown(new)}" for k, (old, new) in changed.items())
            raise OptionsMismatch(f"{path} was made with other options ({words}): its rows would mix "
                                  "them. Choose another --out, or add --mixed-options to resume anyway")
    record.write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")


FORMATS = ("parquet", "jsonl", "csv")


def output_format(path: Path, given: str | None) -> str:
    """As given, else by the path: .csv and .jsonl (or .json) files as named, an existing file JSON lines (as
    earlier releases wrote it), anything else a folder of Parquet parts."""
    if given:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    return "jsonl" if suffix in (".jsonl", ".json") or path.is_file() else "parquet"  # a file: earlier JSON lines


def open_output(path: Path, fmt: str, info: enrich_pb2.ModelInfo | None, part_rows: int | None = None):
    """The output to write answers to: Output for CSV and JSON lines, ParquetOutput for Parquet (which needs the
    served model's description: its columns)."""
    if fmt != "parquet":
        return Output(path, fmt, CsvLayout.of(info) if fmt == "csv" else None)
    try:
        from .answer_parts import AnswerLayout, ParquetOutput
    except ImportError:
        raise OptionsMismatch("Parquet output needs pyarrow: pip install 'enrich-grpc-client[audit]' (or "
                              "'enrich-service[audit]'), or choose --format jsonl or csv") from None
    return ParquetOutput(path, AnswerLayout.of(info), *([part_rows] if part_rows else []))
