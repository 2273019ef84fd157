"""Catalogue loading: the Fashion Product Images folder layout, or a Hugging Face dataset with its columns.

Both give the same `Catalogue`: items with labels (None where missing) and a way to read the image,
so the trainer does not know or care where the data came from.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from enrich_client.sources import csv_rows
from enrich_model.schema import ALL_LABEL_ATTRIBUTES, CAPTION_ATTRIBUTE, STYLES_COLUMNS

from .hub import hub_reachable


class DataError(ValueError):
    """The catalogue cannot be read; the message says what is wrong and what to do."""


@dataclass
class CatalogueItem:
    id: str
    labels: dict[str, str | None]  # every attribute in ALL_LABEL_ATTRIBUTES; None = missing
    name: str | None  # productDisplayName
    # The image file's bytes, as stored: they reach the model through the same decode and preprocessing as
    # the bytes of a request (Preprocessing.from_bytes).
    read_bytes: Callable[[], bytes] = field(repr=False)


@dataclass
class Catalogue:
    items: list[CatalogueItem]
    source: str
    skipped: Counter = field(default_factory=Counter)  # reason -> rows not loaded

    def __len__(self) -> int:
        return len(self.items)


def read_styles_csv(path: Path) -> tuple[list[dict[str, str | None]], Counter]:
    """Rows of styles.csv as dicts. Names with unquoted commas (22 rows in the real file) spill into
    extra fields; those are joined back into productDisplayName rather than dropped."""
    skipped: Counter = Counter()
    rows: list[dict[str, str | None]] = []
    header, lines = csv_rows(path, spill_column=CAPTION_ATTRIBUTE)
    missing = set(STYLES_COLUMNS) - set(header)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}; expected the Fashion Product Images "
                        f"header: {','.join(STYLES_COLUMNS)}")
    for _, fields in lines:
        if len(fields) != len(header):
            skipped["malformed row"] += 1
            continue
        rows.append({h: (v.strip() or None) for h, v in zip(header, fields, strict=True)})
    return rows, skipped


def load_folder_catalogue(root: Path) -> Catalogue:
    """styles.csv + images/{id}.jpg (the Kaggle layout)."""
    root = Path(root)
    rows, skipped = read_styles_csv(root / "styles.csv")
    items = []
    for row in rows:
        image_path = root / "images" / f"{row['id']}.jpg"
        if not image_path.is_file():
            skipped["image file missing"] += 1
            continue
        items.append(CatalogueItem(
            id=str(row["id"]),
            labels={a: row.get(a) for a in ALL_LABEL_ATTRIBUTES},
            name=row.get(CAPTION_ATTRIBUTE),
            read_bytes=image_path.read_bytes,
        ))
    return Catalogue(items, str(root), skipped)


def catalogue_from_hf_dataset(dataset, source: str) -> Catalogue:
    """A `datasets.Dataset` with the styles.csv columns and an `image` column.

    Images are read as the stored file bytes, like catalogue files and request bytes: the same decoding
    follows (EXIF orientation, alpha flattening, reduced-scale JPEG decoding)."""
    import datasets

    missing = ({"id", "image", CAPTION_ATTRIBUTE, *ALL_LABEL_ATTRIBUTES}) - set(dataset.column_names)
    if missing:
        raise DataError(f"{source}: dataset lacks columns {sorted(missing)}")
    raw = dataset.cast_column("image", datasets.Image(decode=False))  # {"bytes", "path"}, not PIL
    labels_only = dataset.remove_columns("image")  # reading labels must not touch every image
    items = []
    for index, row in enumerate(labels_only):
        items.append(CatalogueItem(
            id=str(row["id"]),
            labels={a: (str(row[a]).strip() or None) if row[a] is not None else None for a in ALL_LABEL_ATTRIBUTES},
            name=row.get(CAPTION_ATTRIBUTE),
            read_bytes=lambda i=index: _stored_bytes(raw[i]["image"]),
        ))
    return Catalogue(items, source)


def _stored_bytes(image: dict) -> bytes:
    if image.get("bytes"):
        return image["bytes"]
    return Path(image["path"]).read_bytes()


def load_catalogue(spec: str | Path, split: str = "train") -> Catalogue:
    """A folder with styles.csv, a dataset saved with `save_to_disk`, or a hub id such as
    `ashraq/fashion-product-images-small` (needs the hub). Raises DataError with a one-line reason."""
    path = Path(spec)
    if (path / "styles.csv").is_file():
        try:
            return load_folder_catalogue(path)
        except (OSError, UnicodeError, csv.Error) as error:
            raise DataError(f"cannot read {path / 'styles.csv'}: {error}") from error
    if path.is_dir():
        if not (path / "dataset_dict.json").is_file() and not (path / "dataset_info.json").is_file():
            raise DataError(f"{path} holds neither styles.csv (the Kaggle layout: styles.csv + images/) nor a "
                            "dataset saved with datasets' save_to_disk")
        import datasets  # heavy; only for this path

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path} has no split {split!r}; it has {sorted(loaded)}")
            loaded = loaded[split]
        return catalogue_from_hf_dataset(loaded, str(path))
    if path.exists() or str(spec).startswith((".", "/", "~")) or str(spec).count("/") != 1:
        raise DataError(f"no catalogue at {spec}: expected a folder with styles.csv and images/, a save_to_disk "
                        "dataset folder, or a Hugging Face dataset id such as ashraq/fashion-product-images-small")
    return load_hub_catalogue(str(spec), split)


def load_hub_catalogue(dataset_id: str, split: str) -> Catalogue:
    import datasets

    if not hub_reachable():
        raise DataError(f"cannot load {dataset_id!r} from the Hugging Face hub: the hub is not reachable from here "
                        "(or HF_HUB_OFFLINE is set). Download it where the hub is reachable "
                        f"(datasets.load_dataset({dataset_id!r}).save_to_disk(DIR)) and pass --data DIR")
    try:
        return catalogue_from_hf_dataset(datasets.load_dataset(dataset_id, split=split), dataset_id)
    except DataError:
        raise
    except Exception as error:  # the hub client raises many types; the user needs one sentence
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise DataError(f"cannot load {dataset_id!r} (split {split!r}) from the Hugging Face hub: {reason}") from error
