"""What an audit reads: a catalogue's rows, each an image and the values the catalogue holds for it.

Two layouts: a folder with styles.csv and images/{id}.jpg (Fashion Product Images), or a CSV/JSONL manifest
with a `path` or `url` per row, an optional `id`, and any of the audited columns.
"""

from __future__ import annotations

from pathlib import Path

from enrich.v1 import enrich_pb2

from ..sources import NAME_COLUMN, Source, csv_rows, manifest_location, manifest_rows

# The columns an audit checks: Metadata's attributes by their JSON (the catalogue's) names, the name last.
AUDIT_COLUMNS: tuple[str, ...] = tuple(f.json_name for f in enrich_pb2.Metadata.DESCRIPTOR.fields
                                       if f.message_type is not None and f.message_type.name in ("Prediction",
                                                                                                 "Caption"))


class CatalogueError(ValueError):
    """The catalogue cannot be audited; the message says why."""


def read_catalogue(path: Path) -> list[Source]:
    """One Source per row, keyed by the catalogue's id, carrying its values of the audited columns (empty
    where the catalogue has nothing). Raises CatalogueError, also for an id that two rows share (answers are
    matched to rows by id)."""
    if path.is_dir():
        sources = _styles_folder(path)
    elif path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
        sources = _manifest(path)
    else:
        raise CatalogueError(f"{path}: not a folder with styles.csv, nor a .csv or .jsonl manifest")
    seen: dict[str, int] = {}
    for source in sources:
        seen[source.key] = seen.get(source.key, 0) + 1
    repeated = [key for key, count in seen.items() if count > 1]
    if repeated:
        raise CatalogueError(f"{path}: {len(repeated)} ids appear in more than one row (e.g. {repeated[0]!r}); "
                             "give every row its own id")
    return sources


def _values(row: dict) -> tuple[tuple[str, str], ...]:
    return tuple((column, str(row.get(column) or "").strip()) for column in AUDIT_COLUMNS if column in row)


def _styles_folder(root: Path) -> list[Source]:
    styles = root / "styles.csv"
    if not styles.is_file():
        raise CatalogueError(f"{root}: no styles.csv (a catalogue folder holds styles.csv and images/ID.jpg)")
    header, rows = csv_rows(styles, spill_column=NAME_COLUMN)
    if "id" not in header:
        raise CatalogueError(f"{styles}: no id column")
    if not set(AUDIT_COLUMNS) & set(header):
        raise CatalogueError(f"{styles}: none of the audited columns ({', '.join(AUDIT_COLUMNS)})")
    sources = []
    for _, fields in rows:
        if len(fields) != len(header):
            continue
        row = dict(zip(header, fields, strict=True))
        key = row["id"].strip()
        sources.append(Source.of(str(root / "images" / f"{key}.jpg"), key=key, catalogue=_values(row)))
    return sources


def _manifest(path: Path) -> list[Source]:
    sources = []
    for number, row in manifest_rows(path):
        if not set(AUDIT_COLUMNS) & set(row):
            raise CatalogueError(f"{path}:{number}: none of the audited columns ({', '.join(AUDIT_COLUMNS)})")
        location = manifest_location(path, number, row)
        sources.append(Source.of(location, key=str(row.get("id") or "").strip() or None, catalogue=_values(row)))
    return sources
