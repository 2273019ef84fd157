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

from PIL import Image

from .preprocess import decode_image, to_rgb
from .schema import ALL_LABEL_ATTRIBUTES, CAPTION_ATTRIBUTE, STYLES_COLUMNS


@dataclass
class CatalogueItem:
    id: str
    labels: dict[str, str | None]  # every attribute in ALL_LABEL_ATTRIBUTES; None = missing
    name: str | None  # productDisplayName
    # read_image(target): RGB image; `target` (pixels per side needed) lets large JPEGs decode reduced.
    read_image: Callable[..., Image.Image] = field(repr=False)


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
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        missing = set(STYLES_COLUMNS) - set(header)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        name_at = header.index(CAPTION_ATTRIBUTE)
        for fields in reader:
            if not fields:
                continue
            if len(fields) > len(header) and name_at == len(header) - 1:
                fields = [*fields[:name_at], ",".join(fields[name_at:])]
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
            read_image=lambda target=None, p=image_path: decode_image(p.read_bytes(), target=target).image,
        ))
    return Catalogue(items, str(root), skipped)


def catalogue_from_hf_dataset(dataset, source: str) -> Catalogue:
    """A `datasets.Dataset` with the styles.csv columns and an `image` column."""
    missing = ({"id", "image", CAPTION_ATTRIBUTE, *ALL_LABEL_ATTRIBUTES}) - set(dataset.column_names)
    if missing:
        raise ValueError(f"{source}: dataset lacks columns {sorted(missing)}")
    labels_only = dataset.remove_columns("image")  # reading labels must not decode every image
    items = []
    for index, row in enumerate(labels_only):
        items.append(CatalogueItem(
            id=str(row["id"]),
            labels={a: (str(row[a]).strip() or None) if row[a] is not None else None for a in ALL_LABEL_ATTRIBUTES},
            name=row.get(CAPTION_ATTRIBUTE),
            read_image=lambda target=None, i=index: to_rgb(dataset[i]["image"]),
        ))
    return Catalogue(items, source)


def load_catalogue(spec: str | Path, split: str = "train") -> Catalogue:
    """A folder with styles.csv, a dataset saved with `save_to_disk`, or a hub id such as
    `ashraq/fashion-product-images-small` (needs the hub)."""
    path = Path(spec)
    if (path / "styles.csv").is_file():
        return load_folder_catalogue(path)
    import datasets  # heavy; only for this path

    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded[split]
        return catalogue_from_hf_dataset(loaded, str(path))
    return catalogue_from_hf_dataset(datasets.load_dataset(str(spec), split=split), str(spec))
