"""Reading catalogue tables: what the trainer's catalogue loader and the client's manifests and audit share."""

from __future__ import annotations

import csv
from pathlib import Path


def csv_rows(path: Path, spill_column: str | None = None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV's header and its rows with their line numbers, as the file has them. When `spill_column` is the
    header's last column (a product name, as in Fashion Product Images' styles.csv), a row with more fields
    than the header had unquoted commas in it: the extra fields are joined back into it."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        rejoin = bool(header) and header[-1] == spill_column
        rows = []
        for fields in reader:
            if not fields:
                continue
            if rejoin and len(fields) > len(header):
                fields = [*fields[: len(header) - 1], ",".join(fields[len(header) - 1:])]
            rows.append((reader.line_num, fields))
    return header, rows
