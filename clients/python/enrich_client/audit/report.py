"""report.html: one self-contained page a catalogue manager opens from the audit's folder, offline. The
findings and duplicate groups are embedded as JSON and drawn by the page's own script (filters by attribute,
kind and p_wrong); thumbnails are small JPEGs in thumbs/, lazy-loaded."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from enrich_contract.posterior import FLAG_AT

from .findings import FindingRow

THUMB_SIDE = 128
MAX_SHOWN = 600  # findings drawn on the page (the worst first); findings.csv has them all
MAX_GROUPS, MAX_MEMBERS = 200, 12  # duplicate groups drawn, and copies per group; duplicates.csv has them all
TEMPLATE = Path(__file__).with_name("report.html.in")
PLACEHOLDER = re.compile(r"\{\{(title|data)\}\}")  # filled in one pass: a value is never read as a placeholder


def thumbnail(data: bytes, out: Path) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        image.save(out, format="JPEG", quality=85)


def write_thumbnails(folder: Path, keys: list[str], read: Callable[[str], bytes]) -> dict[str, str]:
    """thumbs/N.jpg for each key (numbered: ids may hold any character); key -> its path relative to folder.
    An image that cannot be read or decoded gets none."""
    (folder / "thumbs").mkdir(exist_ok=True)
    paths = {}
    for number, key in enumerate(keys):
        relative = f"thumbs/{number}.jpg"
        try:
            thumbnail(read(key), folder / relative)
        except Exception:  # a broken image shows as text; the page still works
            continue
        paths[key] = relative
    return paths


def is_shown(kind: str) -> bool:
    """What the page draws: every value that is not plainly right (the worst MAX_SHOWN)."""
    return kind not in ("agrees", "unchecked")


def write_report(folder: Path, title: str, summary: dict, worst: list[FindingRow], total: int, groups: list[dict],
                 looks: dict[str, dict], thumbs: dict[str, str]) -> Path:
    """`groups`: duplicate groups, each {size, members: [{key, width, height, similarity}]}, the copy to keep first;
    `looks`: key -> {palette, sureLevel} from the answers."""
    data = {
        "title": title,
        "summary": summary,
        "findings": [row.csv() | {"thumb": thumbs.get(row.id, ""), "palette": looks.get(row.id, {}).get("palette", [])}
                     for row in worst],
        "total_findings": total,
        "flag_at": FLAG_AT,
        "groups": [group | {"members": [m | {"thumb": thumbs.get(m["key"], "")} for m in group["members"]]}
                   for group in groups],
        "total_groups": len(groups),
    }
    # <, > and & escaped inside the JSON: no value can end the script element or open a comment in it.
    embedded = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
    values = {"title": html.escape(title), "data": embedded}
    page = PLACEHOLDER.sub(lambda match: values[match.group(1)], TEMPLATE.read_text(encoding="utf-8"))
    out = folder / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
