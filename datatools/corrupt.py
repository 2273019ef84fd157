"""A catalogue with known mistakes, to measure an audit against: `enrich corrupt`.

From a catalogue folder (a CSV + images/, Fashion Product Images' or any schema) it writes another in which a
share of the values of chosen single-valued attributes is replaced: the colour attribute's half by the
nearest other colour (the kind of slip a person makes) and half by any other, every other attribute's by
any other value (by default the colour and product attributes, baseColour and articleType for Fashion
Product Images); and extra rows are near-duplicate uploads of existing products (re-encoded, resized,
re-framed by a few per cent, under a new id, with the same values). What was changed is written to
truth.json beside it.
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from enrich_contract.tables import images_by_id
from enrich_model.fashion import COLOUR_RGB
from enrich_model.look import rgb_to_lab

from .catalogue import catalogue_csv, read_rows
from .taxonomy_file import TAXONOMY_FILE, TaxonomyFile, read_taxonomy_file

TRUTH_FILE = "truth.json"


@dataclass
class Truth:
    """What `corrupt` changed: per attribute, id -> the value it replaced; the duplicate rows' originals."""

    replaced: dict[str, dict[str, str]] = field(default_factory=dict)
    neighbour_colours: list[str] = field(default_factory=list)  # ids whose colour became its nearest neighbour
    colour_attribute: str = "baseColour"  # the attribute neighbour_colours are of
    duplicates: dict[str, str] = field(default_factory=dict)  # new id -> the id it copies
    rows: int = 0

    def write(self, folder: Path) -> None:
        (folder / TRUTH_FILE).write_text(json.dumps(self.__dict__, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> Truth:
        return cls(**json.loads((folder / TRUTH_FILE).read_text(encoding="utf-8")))


def nearest_colour(colour: str, choices: list[str]) -> str:
    """The other colour nearest in CIELAB: the confusable neighbour (any other, for names without a known sRGB)."""
    others = [c for c in choices if c != colour and c in COLOUR_RGB]
    if colour not in COLOUR_RGB or not others:
        return next(c for c in choices if c != colour)
    lab = rgb_to_lab(np.asarray([COLOUR_RGB[colour], *(COLOUR_RGB[c] for c in others)], np.float64))
    return others[int(np.argmin(((lab[1:] - lab[0]) ** 2).sum(axis=1)))]


def near_duplicate(image: Image.Image, rng: random.Random) -> bytes:
    """The same photo uploaded again: re-framed by 2-5 % (cropped or padded on each side), resized, re-encoded."""
    width, height = image.size
    margins = [round(rng.uniform(0.02, 0.05) * (width if i % 2 == 0 else height)) * rng.choice((-1, 1))
               for i in range(4)]  # left, top, right, bottom: > 0 crops, < 0 pads
    left, top, right, bottom = margins
    background = image.getpixel((0, 0))
    canvas = Image.new("RGB", (width - left - right, height - top - bottom), background)
    canvas.paste(image, (-left, -top))
    scale = rng.uniform(0.75, 1.4)
    resized = canvas.resize((max(8, round(canvas.width * scale)), max(8, round(canvas.height * scale))),
                            Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=rng.randint(70, 92))
    return buffer.getvalue()


def corrupt(source: Path, out: Path, seed: int = 0, colour_rate: float = 0.05, article_rate: float = 0.05,
            duplicate_rate: float = 0.03, rates: dict[str, float] | None = None) -> Truth:
    """`rates`: attribute -> share of its values to replace; by default `colour_rate` for the schema's colour
    attribute and `article_rate` for its product attribute."""
    overrides = read_taxonomy_file(source / TAXONOMY_FILE) if (source / TAXONOMY_FILE).is_file() else TaxonomyFile()
    table = catalogue_csv(source, overrides)
    schema, rows, _, _ = read_rows(table, None, overrides)
    with open(table, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    images = images_by_id(source / "images")
    key = schema.id_column
    rows = [row for row in rows if row[key] in images]
    if not rows:
        raise ValueError(f"{source}: no rows with an image to corrupt")
    roles = schema.roles
    rates = rates if rates is not None else {roles[r]: rate for r, rate in (("colour", colour_rate),
                                                                           ("product", article_rate)) if r in roles}
    unusable = [a for a in rates if a not in schema or schema[a].multi]
    if unusable:
        raise ValueError(f"cannot replace values of {', '.join(unusable)}: not a single-valued attribute of "
                         f"{table.name} ({', '.join(a for a in schema.names if not schema[a].multi)})")
    rng = random.Random(seed)
    truth = Truth(replaced={attribute: {} for attribute in rates}, colour_attribute=roles.get("colour", ""))
    (out / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        shutil.copyfile(images[row[key]], out / "images" / images[row[key]].name)
    copies = []  # made first, from the clean values: a re-upload repeats the product's values as they were
    numeric = all(str(r[key]).isdigit() for r in rows)
    next_id = max(int(r[key]) for r in rows) + 1 if numeric else 0
    for original in rng.sample(rows, round(duplicate_rate * len(rows))):
        with Image.open(images[original[key]]) as image:
            copy_id = str(next_id) if numeric else f"copy-{next_id}"
            (out / "images" / f"{copy_id}.jpg").write_bytes(near_duplicate(image.convert("RGB"), rng))
        copies.append(dict(original, **{key: copy_id}))
        truth.duplicates[copy_id] = original[key]
        next_id += 1
    for attribute, rate in rates.items():
        replace_values(rows, attribute, rate, key, attribute == roles.get("colour"), rng, truth)
    rows += copies
    rng.shuffle(rows)
    with open(out / table.name, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([row.get(c) or "" for c in header] for row in rows)
    truth.rows = len(rows)
    truth.write(out)
    return truth


def replace_values(rows: list[dict], attribute: str, rate: float, key: str, colour: bool, rng: random.Random,
                   truth: Truth) -> None:
    """A share `rate` of the rows' `attribute` values replaced by another of its values (a colour: every other one
    by its nearest neighbour), recorded in `truth`."""
    values = sorted({r[attribute] for r in rows if r[attribute]})
    labelled = [r for r in rows if r[attribute]]
    for n, row in enumerate(rng.sample(labelled, min(len(labelled), round(rate * len(rows))))):
        original = row[attribute]
        if colour and n % 2 == 0:
            row[attribute] = nearest_colour(original, values)
            truth.neighbour_colours.append(row[key])
        else:
            row[attribute] = rng.choice([v for v in values if v != original])
        truth.replaced[attribute][row[key]] = original


# --- scoring an audit against the truth ----------------------------------------------------------------
def score_audit(truth: Truth, findings: list[dict], duplicate_pairs: list[tuple[str, str]],
                summary: dict) -> dict:
    """The audit's findings and duplicates against what `corrupt` changed: per replaced attribute, precision over
    the top N findings (N = values replaced), recall and the clean values' share at p_wrong >= FLAG_AT, and the
    estimated error rate against the true one; duplicate pairs' precision and recall."""
    from enrich_contract.posterior import FLAG_AT

    out: dict = {"rows": truth.rows}
    for attribute, replaced in truth.replaced.items():
        rows = sorted((f for f in findings if f["attribute"] == attribute and f["kind"] in ("agrees", "disagrees")),
                      key=lambda f: -float(f["p_wrong"]))
        wrong = set(replaced)
        top = rows[: len(wrong)]
        flagged = {f["id"] for f in rows if float(f["p_wrong"]) >= FLAG_AT}
        clean = [f for f in rows if f["id"] not in wrong]
        neighbours = wrong & set(truth.neighbour_colours) if attribute == truth.colour_attribute else set()
        entry = {
            "replaced": len(wrong),
            "precision_top_n": round(sum(f["id"] in wrong for f in top) / max(1, len(top)), 4),
            "recall_at_0.5": round(len(flagged & wrong) / max(1, len(wrong)), 4),
            "clean_flagged_share": round(len(flagged - wrong) / max(1, len(clean)), 4),
            "true_error_rate": round(len(wrong) / max(1, len(rows)), 4),
            "estimated_error_rate": summary["attributes"].get(attribute, {}).get("estimated_error_rate", 0.0),
        }
        if neighbours:
            entry["recall_at_0.5_neighbour_colours"] = round(len(flagged & neighbours) / len(neighbours), 4)
        entry["error_rate_gap_points"] = round(100 * abs(entry["estimated_error_rate"] - entry["true_error_rate"]), 2)
        out[attribute] = entry
    true_pairs = {frozenset(pair) for pair in truth.duplicates.items()}
    found = {frozenset(pair) for pair in duplicate_pairs}
    out["duplicates"] = {"true_pairs": len(true_pairs), "found_pairs": len(found),
                         "precision": round(len(found & true_pairs) / max(1, len(found)), 4),
                         "recall": round(len(found & true_pairs) / max(1, len(true_pairs)), 4)}
    return out
