"""Reading catalogue tables: what the trainer's catalogue loader and the client's manifests and audit share."""

from __future__ import annotations

import csv
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".gif", ".tif",
                            ".tiff", ".bmp"})


def fit_row(fields: list[str], width: int) -> list[str]:
    """A row with more fields than the header's `width` had unquoted commas in its last column (a product name,
    as in 22 rows of the real styles.csv): the extra fields joined back into it."""
    if len(fields) <= width:
        return fields
    return [*fields[: width - 1], ",".join(fields[width - 1:])]


def csv_rows(path: Path, spill_column: str | None = None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV's header and its rows with their line numbers, as the file has them; when `spill_column` is the
    header's last column, rows fitted to the header (`fit_row`)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        rejoin = bool(header) and header[-1] == spill_column
        rows = []
        for fields in reader:
            if not fields:
                continue
            rows.append((reader.line_num, fit_row(fields, len(header)) if rejoin else fields))
    return header, rows


def catalogue_table(folder: Path, named: Path | None = None) -> Path:
    """A catalogue folder's CSV: `named` (a taxonomy file's "csv"), styles.csv, or the folder's only CSV. Raises
    ValueError saying which it found."""
    if named is not None:
        return named
    if (folder / "styles.csv").is_file():
        return folder / "styles.csv"
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        what = "no CSV" if not found else f"several CSVs ({', '.join(f.name for f in found)})"
        raise ValueError(f"{folder}: {what}; a catalogue folder holds styles.csv, or one CSV, and images/ID.jpg "
                         '(name another with "csv" in its taxonomy.json)')
    return found[0]


def images_by_id(folder: Path) -> dict[str, Path]:
    """The image files in `folder` by file stem (a catalogue's id), any image suffix."""
    if not folder.is_dir():
        return {}
    return {f.stem: f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
