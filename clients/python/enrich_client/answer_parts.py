"""Answers as Parquet: typed columns that DuckDB, pandas, Polars or Spark read as they are, written in parts as
they come and resumable by id. What `bulk` and `audit` write by default, on one machine or on Ray.

    OUT/part-000000.parquet, part-000001.parquet, ...     every image's row in exactly one part

A row: requestId, code, reason, message, modelVersion; the image's width, height, format, sizeBytes; one struct
column per attribute of the served model, named as the catalogue names it ({label, confidence, accepted, unsure,
derived, alternatives, values}); the caption's column ({text, confidence, method}); palette; perceptualHash,
productHash, colourFingerprint (6 floats) and embedding (ModelInfo.embedding_size floats, a fixed-size list);
findings (the audit's, one struct per value audited) and errorPrior. A failed image has its code, reason and
message, and nulls. Every part carries the served ModelInfo (as JSON, in the file's metadata), so a folder of
parts says which model made it and what its columns are.

A part is written to a hidden temporary name and renamed into place: a run killed at any moment leaves whole parts
only, and what it held in memory has no row, so a rerun sends it again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa  # the audit extra
import pyarrow.compute as pc
import pyarrow.parquet as pq

from enrich.v1 import enrich_pb2
from enrich_contract.wire import caption_mode_name, to_json

from .outputs import KEY, CsvLayout, OptionsMismatch, prediction_of, record_options

PART_ROWS = 5_000  # rows per part; a killed run sends at most this many again
PART_SECONDS = 60.0  # and a slow run writes what it has at least this often
PART_GLOB = "part-*.parquet"
INFO_KEY = b"enrich.model_info"
FINGERPRINT_SIZE = 6  # CIELAB of the product's dominant colour, then of the background

KIND_PREFIX, LEVEL_PREFIX = "FINDING_KIND_", "TAXONOMY_LEVEL_"


@dataclass(frozen=True)
class AnswerLayout:
    """The columns of a served model's answers: its attributes (CsvLayout's names) and embedding size."""

    columns: CsvLayout
    embedding_size: int
    info: dict  # ModelInfo as JSON, stored with every part

    @classmethod
    def of(cls, info: enrich_pb2.ModelInfo) -> AnswerLayout:
        return cls(CsvLayout.of(info), int(info.embedding_size), to_json(info))

    def schema(self):
        score = pa.struct([("label", pa.string()), ("confidence", pa.float32()), ("accepted", pa.bool_())])
        prediction = pa.struct([("label", pa.string()), ("confidence", pa.float32()), ("accepted", pa.bool_()),
                                ("unsure", pa.bool_()), ("derived", pa.bool_()),
                                ("alternatives", pa.list_(score)), ("values", pa.list_(score))])
        finding = pa.struct([("attribute", pa.string()), ("kind", pa.string()), ("supplied", pa.string()),
                             ("suppliedLabel", pa.string()), ("pSupplied", pa.float32()),
                             ("predicted", pa.string()), ("pPredicted", pa.float32()), ("pWrong", pa.float32()),
                             ("level", pa.string()), ("predictedAccepted", pa.bool_())])
        fields = [(KEY, pa.string()), ("code", pa.int32()), ("reason", pa.string()), ("message", pa.string()),
                  ("modelVersion", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                  ("format", pa.string()), ("sizeBytes", pa.int64()),
                  *[(self.columns.column(a), prediction) for a in self.columns.attributes],
                  (self.columns.column(self.columns.caption), pa.struct([
                      ("text", pa.string()), ("confidence", pa.float32()), ("method", pa.string())])),
                  ("palette", pa.list_(pa.struct([("hex", pa.string()), ("share", pa.float32()),
                                                  ("nearest", pa.string())]))),
                  ("perceptualHash", pa.string()), ("productHash", pa.string()),
                  ("colourFingerprint", pa.list_(pa.float32(), FINGERPRINT_SIZE)),
                  ("embedding", pa.list_(pa.float32(), max(1, self.embedding_size))),
                  ("findings", pa.list_(finding)), ("errorPrior", pa.float32())]
        return pa.schema(fields, metadata={INFO_KEY: json.dumps(self.info).encode()})

    def table(self, responses: Iterable[enrich_pb2.EnrichResponse]):
        """The responses as one table of this layout."""
        return pa.Table.from_pylist([self.row(r) for r in responses], schema=self.schema())

    def row(self, response: enrich_pb2.EnrichResponse) -> dict:
        status = response.status
        row: dict = {KEY: response.request_id, "code": status.code, "modelVersion": response.model_version,
                     "reason": enrich_pb2.ErrorReason.Name(status.reason) if status.reason else "",
                     "message": status.message if status.code else ""}
        if status.code:
            return row
        metadata = response.metadata
        image = metadata.image
        row |= {"width": image.width, "height": image.height, "format": image.format, "sizeBytes": image.size_bytes}
        for attribute in self.columns.attributes:
            if (value := prediction_of(metadata, attribute)) is None:
                continue
            row[self.columns.column(attribute)] = {
                "label": value.label, "confidence": value.confidence, "accepted": value.accepted,
                "unsure": value.unsure, "derived": value.derived, "alternatives": _scores(value.alternatives),
                "values": _scores(value.values)}
        if metadata.HasField("product_display_name"):
            caption = metadata.product_display_name
            row[self.columns.column(self.columns.caption)] = {
                "text": caption.text, "confidence": caption.confidence,
                "method": caption_mode_name(caption.method) if caption.method else ""}
        row["palette"] = [{"hex": c.hex, "share": c.share, "nearest": c.nearest} for c in metadata.palette]
        signature = metadata.signature
        row |= {"perceptualHash": signature.perceptual_hash, "productHash": signature.product_hash,
                "colourFingerprint": list(signature.colour_fingerprint) or None,
                "embedding": list(signature.embedding) or None}
        if response.HasField("audit"):
            row["findings"] = [_finding(f) for f in response.audit.findings]
            row["errorPrior"] = response.audit.error_prior
        return row


def _scores(scores) -> list[dict]:
    return [{"label": s.label, "confidence": s.confidence, "accepted": s.accepted} for s in scores]


def _finding(finding: enrich_pb2.Finding) -> dict:
    level = enrich_pb2.TaxonomyLevel.Name(finding.disagreement_level)
    return {"attribute": finding.attribute, "supplied": finding.supplied, "suppliedLabel": finding.supplied_label,
            "kind": enrich_pb2.FindingKind.Name(finding.kind).removeprefix(KIND_PREFIX).lower(),
            "pSupplied": finding.p_supplied, "predicted": finding.predicted, "pPredicted": finding.p_predicted,
            "pWrong": finding.p_wrong, "predictedAccepted": finding.predicted_accepted,
            "level": "" if level.endswith("UNSPECIFIED") else level.removeprefix(LEVEL_PREFIX).lower()}


def _temporary(part: Path) -> Path:
    """Where a part is written before it is renamed into place: a hidden name, which query engines reading the
    folder (pyarrow, DuckDB's part-*.parquet) leave alone."""
    return part.with_name(f".{part.name}.tmp")


def parts(folder: Path) -> list[Path]:
    return sorted(folder.glob(PART_GLOB))


def stored_info(folder: Path) -> dict | None:
    """The ModelInfo (JSON) the folder's answers were made with; None without parts."""
    found = parts(folder)
    if not found:
        return None
    return json.loads(pq.read_schema(found[0]).metadata[INFO_KEY])


def read_batches(folder: Path, columns: list[str] | None = None, batch_rows: int = 16_384) -> Iterator:
    """The folder's rows as record batches of `columns` (all: None), part after part: memory holds one batch."""
    for path in parts(folder):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)


def count_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in parts(folder))


class ParquetOutput:
    """bulk's and audit's AnswerSink in Parquet parts (see the module): on open, the ids already there (and which
    failed); then rows as they come, a part every PART_ROWS rows or PART_SECONDS, and the rest on close."""

    def __init__(self, folder: Path, layout: AnswerLayout, part_rows: int = PART_ROWS,
                 part_seconds: float = PART_SECONDS) -> None:
        self.path, self.layout, self.part_rows, self.part_seconds = folder, layout, part_rows, part_seconds
        if folder.exists() and not folder.is_dir():
            raise OptionsMismatch(f"{folder} is a file: Parquet answers are a folder of parts; choose another --out")
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(".*.parquet.tmp"):  # a part a killed run did not finish: its rows are not done
            leftover.unlink()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        schema = layout.schema()
        for path in parts(folder):
            if not pq.read_schema(path).remove_metadata().equals(schema.remove_metadata()):
                raise OptionsMismatch(f"{path} has other columns than this model's answers: it was written for "
                                      "another model; choose another --out")
            table = pq.read_table(path, columns=[KEY, "code"])
            for key, code in zip(table[KEY].to_pylist(), table["code"].to_pylist(), strict=True):
                self.done.add(key)
                if code:
                    self.failed.add(key)
        found = parts(folder)
        self.next_part = int(found[-1].stem.split("-")[1]) + 1 if found else 0
        self.pending: list[enrich_pb2.EnrichResponse] = []
        self.tables: list = []  # whole tables handed over by write_table (Ray's batches), not yet in a part
        self.pending_rows = 0
        self.last_part = time.monotonic()
        self.lock = threading.Lock()

    def check_options(self, options: dict, mixed: bool) -> None:
        record_options(self.path.with_name(self.path.name + ".bulk.json"), self.path, bool(self.done), options,
                       mixed)

    def write(self, response: enrich_pb2.EnrichResponse) -> None:
        with self.lock:
            self.pending.append(response)
            self.pending_rows += 1
            self._maybe_flush()

    def write_table(self, table):
        """Rows already in this layout (from `AnswerLayout.table`, e.g. made by Ray's workers); a row whose id is
        already written or pending (a retried task's) is left out. Returns the rows kept."""
        with self.lock:
            seen = {key for t in self.tables for key in t[KEY].to_pylist()}  # pending: at most a part's rows
            fresh = []
            for key in table[KEY].to_pylist():
                fresh.append(key not in self.done and key not in seen)
                seen.add(key)
            table = table.filter(pa.array(fresh, pa.bool_())) if not all(fresh) else table
            self.tables.append(table.cast(self.layout.schema()))
            self.pending_rows += table.num_rows
            self._maybe_flush()
            return table

    def _maybe_flush(self) -> None:
        if self.pending_rows >= self.part_rows or time.monotonic() - self.last_part >= self.part_seconds:
            self._flush()

    def _flush(self) -> None:
        self.last_part = time.monotonic()
        if not self.pending_rows:
            return
        tables = [*self.tables, *([self.layout.table(self.pending)] if self.pending else [])]
        table = pa.concat_tables(tables)
        path = self.path / f"part-{self.next_part:06d}.parquet"
        temporary = _temporary(path)
        pq.write_table(table, temporary)
        os.replace(temporary, path)  # whole or not at all
        self.next_part += 1
        keys, codes = table[KEY].to_pylist(), table["code"].to_pylist()
        self.done.update(keys)
        self.failed.update(k for k, c in zip(keys, codes, strict=True) if c)
        self.pending, self.tables, self.pending_rows = [], [], 0

    def forget(self, keys: set[str]) -> None:
        """Takes these ids' rows out of the parts (their images are sent again): each part that holds one is
        rewritten without it, and replaced whole."""
        if not keys:
            return
        wanted = pa.array(sorted(keys), pa.string())
        for path in parts(self.path):
            table = pq.read_table(path)
            drop = pc.is_in(table[KEY], value_set=wanted)
            if pc.any(drop).as_py():
                temporary = _temporary(path)
                pq.write_table(table.filter(pc.invert(drop)), temporary)
                os.replace(temporary, path)
        self.done -= keys
        self.failed -= keys

    def close(self) -> None:
        with self.lock:
            self._flush()
