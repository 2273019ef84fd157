"""What an audit reads: a catalogue's rows, each an image and the values the catalogue holds for it.

Two layouts: a folder with a catalogue CSV (styles.csv, or its only CSV) and images/{id}.jpg (any image
suffix), or a CSV/JSONL manifest with a `path` or `url` per row, an optional `id`, and any of the audited
columns. Which columns are audited is the served model's schema (`audited_columns`); Fashion Product Images'
by default.
"""

from __future__ import annotations

from pathlib import Path

from enrich_contract.tables import catalogue_table, images_by_id
from enrich_contract.wire import TYPED_ATTRIBUTES

from ..sources import NAME_COLUMN, Source, csv_rows, manifest_location, manifest_rows

# The columns an audit checks without the served model's description: Metadata's typed attributes by their JSON
# (the catalogue's) names, the name last.
AUDIT_COLUMNS: tuple[str, ...] = (*TYPED_ATTRIBUTES, NAME_COLUMN)


class CatalogueError(ValueError):
    """The catalogue cannot be audited; the message says why."""


def audited_columns(info: dict | None) -> tuple[str, ...]:
    """The columns the served model audits (ModelInfo as JSON): its attributes, then its caption column; Fashion
    Product Images' without a description."""
    if not info or not info.get("attributes"):
        return AUDIT_COLUMNS
    caption = info["schema"].get("captionColumn", "") if "schema" in info else NAME_COLUMN  # older servers
    return (*(a["name"] for a in info["attributes"]), *((caption,) if caption else ()))


def check_catalogue(path: Path) -> None:
    """Refuses a path that is no catalogue at all, before anything is sent."""
    if not (path.is_dir() or (path.suffix.lower() in (".csv", ".jsonl") and path.is_file())):
        raise CatalogueError(f"{path}: not a folder with a catalogue CSV, nor a .csv or .jsonl manifest")


def read_catalogue(path: Path, columns: tuple[str, ...] = AUDIT_COLUMNS, id_column: str = "id") -> list[Source]:
    """One Source per row, keyed by the catalogue's id, carrying its values of the audited `columns` (empty
    where the catalogue has nothing). Raises CatalogueError, also for an id that two rows share (answers are
    matched to rows by id)."""
    check_catalogue(path)
    sources = _folder(path, columns, id_column) if path.is_dir() else _manifest(path, columns)
    seen: dict[str, int] = {}
    for source in sources:
        seen[source.key] = seen.get(source.key, 0) + 1
    repeated = [key for key, count in seen.items() if count > 1]
    if repeated:
        raise CatalogueError(f"{path}: {len(repeated)} ids appear in more than one row (e.g. {repeated[0]!r}); "
                             "give every row its own id")
    return sources


def _values(row: dict, columns: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((column, str(row.get(column) or "").strip()) for column in columns if column in row)


def _folder(root: Path, columns: tuple[str, ...], id_column: str) -> list[Source]:
    try:
        table = catalogue_table(root)
    except ValueError as error:
        raise CatalogueError(str(error)) from None
    header, rows = csv_rows(table, spill_column=NAME_COLUMN)
    if id_column not in header:
        raise CatalogueError(f"{table}: no {id_column} column (the served model's id column)")
    if not set(columns) & set(header):
        raise CatalogueError(f"{table}: none of the audited columns ({', '.join(columns)})")
    images = images_by_id(root / "images")
    sources = []
    for _, fields in rows:
        if len(fields) != len(header):
            continue
        row = dict(zip(header, fields, strict=True))
        key = row[id_column].strip()
        image = images.get(key, root / "images" / f"{key}.jpg")
        sources.append(Source.of(str(image), key=key, catalogue=_values(row, columns)))
    return sources


def _manifest(path: Path, columns: tuple[str, ...]) -> list[Source]:
    sources = []
    for number, row in manifest_rows(path):
        if not set(columns) & set(row):
            raise CatalogueError(f"{path}:{number}: none of the audited columns ({', '.join(columns)})")
        location = manifest_location(path, number, row)
        sources.append(Source.of(location, key=str(row.get("id") or "").strip() or None,
                                 catalogue=_values(row, columns)))
    return sources
