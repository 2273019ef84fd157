"""taxonomy.json: what schema inference cannot know about a catalogue, said by its owner.

Put it beside the catalogue's CSV (or name it with `enrich train --taxonomy FILE`). Every key is optional:

    {
      "csv": "products.csv",              the catalogue file (default: styles.csv, or the folder's only .csv)
      "id": "sku",                         the id column (default: a column named id, sku, or ending in _id)
      "caption": "title",                  the free-text column captions learn ("" for none)
      "exclude": ["internal_code"],        columns to leave out
      "min_examples": 5,                   fewest training examples a value needs (default --min_class_count)
      "rare": "other",                     rarer values: "drop" (the default: not learnt) or "other"
      "attributes": {
        "style": {"kind": "multi", "separator": "|"},
        "department": {"derived_from": "product_type"},
        "finish": {"role": "colour"}
      }
    }

An attribute named in "attributes" is learnt even where inference would leave it out; its keys override what
inference found. `JSON_SCHEMA` is the file's JSON Schema (docs/taxonomy.schema.json holds a copy); a file that
breaks it is refused in one line that says where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from enrich_model.schema import KINDS, RARE_ACTIONS, ROLES

TAXONOMY_FILE = "taxonomy.json"

JSON_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://github.com/enrich-project/enrich/docs/taxonomy.schema.json",
    "title": "Enrich taxonomy file",
    "description": "What schema inference cannot know about a catalogue: its id, caption and attribute columns.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "csv": {"type": "string", "minLength": 1, "description": "The catalogue CSV, relative to this file."},
        "id": {"type": "string", "minLength": 1, "description": "The column that identifies a product."},
        "caption": {"type": "string", "description": "The free-text column captions learn; empty for none."},
        "exclude": {"type": "array", "items": {"type": "string"}, "uniqueItems": True,
                    "description": "Columns to leave out."},
        "min_examples": {"type": "integer", "minimum": 1,
                         "description": "The fewest training examples a value needs to be learnt."},
        "rare": {"enum": list(RARE_ACTIONS),
                 "description": "What happens to rarer values: drop (not learnt) or other (folded into 'other')."},
        "attributes": {
            "type": "object",
            "description": "Attributes by column name, with what inference cannot know.",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "kind": {"enum": list(KINDS)},
                    "separator": {"type": "string", "minLength": 1,
                                  "description": "What joins a multi-valued cell's values."},
                    "derived_from": {"type": "string", "minLength": 1,
                                     "description": "The column this one is a function of (its child)."},
                    "role": {"enum": [*ROLES, ""]},
                },
            },
        },
    },
}


class TaxonomyFileError(ValueError):
    """The taxonomy file is not valid; the message says what is wrong and where, in one line."""


@dataclass(frozen=True)
class AttributeOverride:
    kind: str | None = None
    separator: str | None = None
    derived_from: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class TaxonomyFile:
    path: Path | None = None
    csv: str | None = None
    id: str | None = None
    caption: str | None = None
    exclude: tuple[str, ...] = ()
    min_examples: int | None = None
    rare: str = "drop"
    attributes: dict[str, AttributeOverride] = field(default_factory=dict)

    @property
    def named(self) -> list[str]:
        """Every column the file names, for checking that the catalogue has them."""
        names = [*self.exclude, *self.attributes]
        names += [o.derived_from for o in self.attributes.values() if o.derived_from]
        return names + [c for c in (self.id, self.caption) if c]


def read_taxonomy_file(path: Path) -> TaxonomyFile:
    """The file at `path`, checked against JSON_SCHEMA; raises TaxonomyFileError."""
    import jsonschema

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TaxonomyFileError(f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: "
                                f"{error.msg}") from None
    except (OSError, UnicodeError) as error:
        raise TaxonomyFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    errors = sorted(jsonschema.Draft202012Validator(JSON_SCHEMA).iter_errors(data), key=lambda e: e.path)
    if errors:
        error = errors[0]
        where = error.json_path if error.path else "the top level"
        raise TaxonomyFileError(f"{path}: at {where}: {error.message}")
    return TaxonomyFile(path=path, csv=data.get("csv"), id=data.get("id"), caption=data.get("caption"),
                        exclude=tuple(data.get("exclude", ())), min_examples=data.get("min_examples"),
                        rare=data.get("rare", "drop"),
                        attributes={name: AttributeOverride(**spec)
                                    for name, spec in data.get("attributes", {}).items()})


if __name__ == "__main__":  # writes docs/taxonomy.schema.json, the published copy of JSON_SCHEMA
    published = Path(__file__).resolve().parent.parent / "docs" / "taxonomy.schema.json"
    published.write_text(json.dumps(JSON_SCHEMA, indent=2) + "\n")
    print(f"wrote {published}")
