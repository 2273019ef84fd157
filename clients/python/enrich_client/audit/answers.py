"""What the audit's second half reads: the OK answers, as record batches of the columns each step needs.

From Parquet parts (the default: read part after part, so memory holds one batch) or from answers.jsonl (an
audit begun before Parquet, or run with --answers-format jsonl: read whole, the last answer per id, and put in
the same columns). Either way the steps after see one layout: answer_parts.AnswerLayout's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import json_format

from enrich.v1 import enrich_pb2

from ..answer_parts import AnswerLayout, count_rows, read_batches, stored_info
from ..outputs import CsvLayout

BATCH_ROWS = 16_384


class AuditAnswers:
    def __init__(self, info: dict, folder: Path | None = None, table: pa.Table | None = None) -> None:
        self.info, self.folder, self.table = info, folder, table
        self.columns = CsvLayout.of(json_format.ParseDict(info, enrich_pb2.ModelInfo(), ignore_unknown_fields=True))

    @classmethod
    def parquet(cls, folder: Path, info: dict | None = None) -> AuditAnswers:
        """The parts in `folder`; `info` (ModelInfo as JSON) when it holds none yet."""
        return cls(stored_info(folder) or info or {}, folder=folder)

    @classmethod
    def jsonl(cls, path: Path, info: dict) -> AuditAnswers:
        """answers.jsonl's OK answers, the last written per request id, in the Parquet layout."""
        latest: dict[str, dict] = {}
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            if line.strip():
                answer = json.loads(line)
                if not answer["status"]["code"]:
                    latest[answer["requestId"]] = answer
        model = json_format.ParseDict(info, enrich_pb2.ModelInfo(), ignore_unknown_fields=True)
        responses = [json_format.ParseDict(a, enrich_pb2.EnrichResponse(), ignore_unknown_fields=True)
                     for a in latest.values()]
        return cls(info, table=AnswerLayout.of(model).table(responses))

    def column(self, attribute: str) -> str:
        """An attribute's column in the answers (as CSV names it: an attribute called `format` is formatValue)."""
        return self.columns.column(attribute)

    @property
    def rows(self) -> int:
        """Rows held (OK or not)."""
        return self.table.num_rows if self.table is not None else count_rows(self.folder) if self.folder else 0

    def batches(self, columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The OK answers' `columns`, batch after batch."""
        wanted = list(dict.fromkeys([*columns, "code"]))
        if self.table is not None:
            source = self.table.select(wanted).to_batches(max_chunksize=batch_rows)
        else:
            source = read_batches(self.folder, wanted, batch_rows) if self.folder else iter(())
        for batch in source:
            ok = batch.filter(pc.equal(batch.column("code"), 0))
            if ok.num_rows:
                yield ok.select(columns)
