"""Catalogue loading: a folder with a CSV and images/ (the Fashion Product Images layout, or any catalogue's
own columns), or a Hugging Face dataset with its columns.

Both give the same `Catalogue`: its schema (`enrich_model.schema.CatalogueSchema`: Fashion Product Images'
for styles.csv with that header, else inferred from the rows and a taxonomy file), and items with their values
(None where missing) and a way to read the image, so the trainer does not know or care where the data came
from.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from enrich_contract.tables import catalogue_table, csv_rows, fit_row, images_by_id
from enrich_model.fashion import FASHION_SCHEMA, STYLES_COLUMNS
from enrich_model.schema import OTHER, CatalogueSchema, SchemaError

from .hub import hub_reachable
from .schema_inference import infer_schema
from .taxonomy_file import TAXONOMY_FILE, TaxonomyFile, TaxonomyFileError, read_taxonomy_file


class DataError(ValueError):
    """The catalogue cannot be read; the message says what is wrong and what to do."""


@dataclass
class CatalogueItem:
    id: str
    labels: dict[str, str | None]  # every attribute of the schema, as the catalogue has it; None = missing
    name: str | None  # the caption column's text
    # The image file's bytes, as stored: they reach the model through the same decode and preprocessing as
    # the bytes of a request (Preprocessing.from_bytes).
    read_bytes: Callable[[], bytes] = field(repr=False)


@dataclass
class Catalogue:
    items: list[CatalogueItem]
    source: str
    skipped: Counter = field(default_factory=Counter)  # reason -> rows not loaded
    schema: CatalogueSchema = FASHION_SCHEMA
    notes: list[str] = field(default_factory=list)  # how the schema was found, a line per column
    taxonomy_file: TaxonomyFile = field(default_factory=TaxonomyFile)

    def __len__(self) -> int:
        return len(self.items)

    def values(self, attribute: str, items: list[CatalogueItem] | None = None) -> list[list[str]]:
        """Each item's values of `attribute` (one for a single-valued attribute, none when missing), of `items`
        (default: all)."""
        spec = self.schema[attribute]
        return [spec.values(item.labels.get(attribute)) for item in (self.items if items is None else items)]

    def fold_rare(self, min_examples: int, counted: list[CatalogueItem] | None = None) -> dict[str, list[str]]:
        """Values with fewer than `min_examples` items in `counted` (default: all) per classified attribute: with
        the taxonomy file's rare "other", rewritten to "other" on every item; returned either way, to report."""
        rare: dict[str, list[str]] = {}
        for attribute in self.schema.classified:
            counts = Counter(v for values in self.values(attribute, counted) for v in values)
            found = sorted(v for v, n in counts.items() if n < min_examples)
            if found:
                rare[attribute] = found
        if self.taxonomy_file.rare == OTHER:
            self.fold_into_other(rare)
        return rare

    def fold_into_other(self, rare: dict[str, list[str]]) -> None:
        """Rewrite each attribute's `rare` values to "other" on every item (as training did, for a bundle
        trained with the taxonomy file's rare "other")."""
        for item in self.items:
            for attribute, values in rare.items():
                if attribute not in self.schema:
                    continue
                spec, gone = self.schema[attribute], set(values)
                kept = [OTHER if v in gone else v for v in spec.values(item.labels.get(attribute))]
                if kept:
                    item.labels[attribute] = (spec.separator or "|").join(dict.fromkeys(kept))


def catalogue_csv(root: Path, overrides: TaxonomyFile) -> Path:
    """The folder's catalogue file: the taxonomy file's "csv", styles.csv, or its only CSV."""
    named = (overrides.path.parent if overrides.path else root) / overrides.csv if overrides.csv else None
    try:
        return catalogue_table(root, named)
    except ValueError as error:
        raise DataError(str(error)) from None


def read_rows(path: Path, schema: CatalogueSchema | None, overrides: TaxonomyFile) \
        -> tuple[CatalogueSchema, list[dict[str, str | None]], Counter, list[str]]:
    """The CSV's rows as dicts, with its schema: `schema` when given (a bundle's), Fashion Product Images' for
    its header without a taxonomy file, else inferred. Rows with more fields than the header had unquoted commas
    in the caption when it is the last column: joined back into it (`fit_row`)."""
    header, lines = csv_rows(path)
    if not header:
        raise DataError(f"{path}: empty file, no header")
    notes: list[str] = []
    fashion = set(STYLES_COLUMNS) <= set(header) and overrides.path is None
    if schema is None and fashion:
        schema = FASHION_SCHEMA
        notes = ["the Fashion Product Images layout (styles.csv's columns): its schema, unchanged"]
    caption = schema.caption if schema is not None else (overrides.caption or "")
    rejoin = (bool(caption) and header[-1] == caption) or (schema is None and overrides.caption is None)
    rows, skipped = _rows(header, lines, rejoin)
    if schema is None:
        try:
            inferred = infer_schema(header, rows, overrides)
        except SchemaError as error:
            raise DataError(f"{path}: {error}") from None
        schema, notes = inferred.schema, inferred.notes
        if schema.caption != header[-1] and rejoin:  # commas joined into a column that is not free text
            rows, skipped = _rows(header, lines, False)
    missing = [c for c in schema.columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column {', '.join(missing)}; the schema reads {', '.join(schema.columns)}")
    return schema, rows, skipped, notes


def _rows(header: list[str], lines: list[tuple[int, list[str]]],
          rejoin: bool) -> tuple[list[dict[str, str | None]], Counter]:
    """The lines as dicts by column (fitted to the header with `rejoin`), and the count of those that do not fit."""
    rows: list[dict[str, str | None]] = []
    skipped: Counter = Counter()
    for _, fields in lines:
        fields = fit_row(fields, len(header)) if rejoin else fields
        if len(fields) != len(header):
            skipped["malformed row"] += 1
            continue
        rows.append({h: (v.strip() or None) for h, v in zip(header, fields, strict=True)})
    return rows, skipped


def read_styles_csv(path: Path) -> tuple[list[dict[str, str | None]], Counter]:
    """A Fashion Product Images styles.csv's rows and what was skipped."""
    _, rows, skipped, _ = read_rows(path, FASHION_SCHEMA, TaxonomyFile())
    return rows, skipped


def load_folder_catalogue(root: Path, schema: CatalogueSchema | None = None,
                          taxonomy: Path | None = None) -> Catalogue:
    """A CSV + images/{id}.jpg (or any image suffix) under `root`, with `schema` (a bundle's) or the folder's own
    (Fashion Product Images', or inferred with `taxonomy`, default ROOT/taxonomy.json when present)."""
    root = Path(root)
    taxonomy = taxonomy or (root / TAXONOMY_FILE if (root / TAXONOMY_FILE).is_file() else None)
    try:
        overrides = read_taxonomy_file(taxonomy) if taxonomy else TaxonomyFile()
    except TaxonomyFileError as error:
        raise DataError(str(error)) from None
    path = catalogue_csv(root, overrides)  # the file's "csv" counts with a bundle's schema too
    schema, rows, skipped, notes = read_rows(path, schema, overrides if schema is None else TaxonomyFile())
    images = images_by_id(root / "images")
    items = []
    for row in rows:
        item_id = str(row[schema.id_column] or "")
        image_path = images.get(item_id)
        if image_path is None:
            skipped["image file missing"] += 1
            continue
        items.append(CatalogueItem(
            id=item_id,
            labels={a: row.get(a) for a in schema.names},
            name=row.get(schema.caption) if schema.caption else None,
            read_bytes=image_path.read_bytes,
        ))
    return Catalogue(items, str(root), skipped, schema, notes, overrides)


def catalogue_from_hf_dataset(dataset, source: str, schema: CatalogueSchema | None = None) -> Catalogue:
    """A `datasets.Dataset` with the schema's columns (default: Fashion Product Images') and an `image` column.

    Images are read as the stored file bytes, like catalogue files and request bytes: the same decoding
    follows (EXIF orientation, alpha flattening, reduced-scale JPEG decoding)."""
    import datasets

    schema = schema or FASHION_SCHEMA
    missing = ({schema.id_column, "image", *schema.names, *([schema.caption] if schema.caption else [])}
               - set(dataset.column_names))
    if missing:
        raise DataError(f"{source}: the dataset lacks the columns {', '.join(sorted(missing))}")
    raw = dataset.cast_column("image", datasets.Image(decode=False))  # {"bytes", "path"}, not PIL
    labels_only = dataset.remove_columns("image")  # reading labels must not touch every image
    items = []
    for index, row in enumerate(labels_only):
        items.append(CatalogueItem(
            id=str(row[schema.id_column]),
            labels={a: (str(row[a]).strip() or None) if row[a] is not None else None for a in schema.names},
            name=row.get(schema.caption) if schema.caption else None,
            read_bytes=lambda i=index: _stored_bytes(raw[i]["image"]),
        ))
    return Catalogue(items, source, schema=schema)


def _stored_bytes(image: dict) -> bytes:
    if image.get("bytes"):
        return image["bytes"]
    return Path(image["path"]).read_bytes()


def load_catalogue(spec: str | Path, split: str = "train", schema: CatalogueSchema | None = None,
                   taxonomy: Path | None = None) -> Catalogue:
    """A folder with a CSV and images/, a dataset saved with `save_to_disk`, or a hub id such as
    `ashraq/fashion-product-images-small` (needs the hub). `schema`: read the columns of this one (a bundle's);
    else the folder's own. Raises DataError with a one-line reason."""
    path = Path(spec)
    if path.is_dir() and (any(path.glob("*.csv")) or (path / TAXONOMY_FILE).is_file() or taxonomy):
        try:
            return load_folder_catalogue(path, schema, taxonomy)
        except (OSError, UnicodeError, csv.Error) as error:
            raise DataError(f"cannot read the catalogue in {path}: {error}") from error
    if path.is_dir():
        if not (path / "dataset_dict.json").is_file() and not (path / "dataset_info.json").is_file():
            raise DataError(f"{path} holds neither a catalogue CSV (with images/) nor a dataset saved with "
                            "datasets' save_to_disk")
        import datasets  # heavy; only for this path

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path} has no split {split!r}; it has {sorted(loaded)}")
            loaded = loaded[split]
        return catalogue_from_hf_dataset(loaded, str(path), schema)
    if path.exists() or str(spec).startswith((".", "/", "~")) or str(spec).count("/") != 1:
        raise DataError(f"no catalogue at {spec}: expected a folder with styles.csv and images/, a save_to_disk "
                        "dataset folder, or a Hugging Face dataset id such as ashraq/fashion-product-images-small")
    return load_hub_catalogue(str(spec), split, schema)


def load_hub_catalogue(dataset_id: str, split: str, schema: CatalogueSchema | None = None) -> Catalogue:
    import datasets

    if not hub_reachable():
        raise DataError(f"cannot load {dataset_id!r} from the Hugging Face hub: the hub is not reachable from here "
                        "(or HF_HUB_OFFLINE is set). Download it where the hub is reachable "
                        f"(datasets.load_dataset({dataset_id!r}).save_to_disk(DIR)) and pass --data DIR")
    try:
        return catalogue_from_hf_dataset(datasets.load_dataset(dataset_id, split=split), dataset_id, schema)
    except DataError:
        raise
    except Exception as error:  # the hub client raises many types; the user needs one sentence
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise DataError(f"cannot load {dataset_id!r} (split {split!r}) from the Hugging Face hub: {reason}") from error
