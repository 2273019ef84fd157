"""A catalogue's schema from its rows: which column is the id, which are attributes (single- or
multi-valued), which follow from which, which is the caption's text, and what is left out and why.

`infer_schema` returns the schema with one line per decision (`Inferred.notes`), which `enrich train` prints
before training; a taxonomy file (`taxonomy_file.TaxonomyFile`) overrides what inference cannot know.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from enrich_model.schema import MULTI, SINGLE, Attribute, CatalogueSchema, SchemaError

from .taxonomy_file import TaxonomyFile

SEPARATORS = ("|", ";")  # what joins a multi-valued cell's values, tried in this order
FUNCTION_AGREEMENT = 0.99  # share of rows where a parent follows its child's most common parent
MAX_SHARE_DISTINCT = 0.5  # more distinct values than this share of the rows: near-unique, left out
MIN_CAPTION_WORDS = 3.0  # mean words of a free-text column
MIN_ROWS_PER_VALUE = 4  # a parent is looked for only under a child with at least this many rows per value
NEAR_CONSTANT = 0.95  # a column whose one value fills this share of rows is no parent (it follows from anything)
ID_NAMES = re.compile(r"^(id|sku|.*[_ ]id|.*Id)$", re.IGNORECASE)
ROLE_NAMES = {"gender": re.compile(r"gender|sex", re.IGNORECASE), "colour": re.compile(r"colou?r", re.IGNORECASE)}

Rows = Sequence[Mapping[str, str | None]]


@dataclass
class Inferred:
    schema: CatalogueSchema
    notes: list[str] = field(default_factory=list)  # one line per column: what it became, and why


def cells(rows: Rows, column: str) -> list[str]:
    return [v.strip() for row in rows if (v := row.get(column)) and v.strip()]


def _numeric(values: Sequence[str]) -> bool:
    try:
        for value in values:
            float(value)
    except ValueError:
        return False
    return bool(values)


def _mean_words(values: Sequence[str]) -> float:
    return sum(len(v.split()) for v in values) / max(len(values), 1)


def _separator(values: Sequence[str], rows: int) -> str | None:
    """A separator that joins several values in at least a tenth of the cells into a closed vocabulary."""
    for separator in SEPARATORS:
        joined = [v for v in values if separator in v]
        if len(joined) < 0.1 * len(values):
            continue
        parts = {p.strip() for v in values for p in v.split(separator) if p.strip()}
        if len(parts) <= MAX_SHARE_DISTINCT * rows and len(parts) < len(set(values)):
            return separator
    return None


def parents_by_child(rows: Rows, child: str, parent: str) -> dict[str, Counter[str]]:
    """child value -> how often each parent value stands beside it, on the rows that have both."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        c, p = (row.get(child) or "").strip(), (row.get(parent) or "").strip()
        if c and p:
            seen[c][p] += 1
    return seen


def agreement(seen: Mapping[str, Counter[str]]) -> float:
    """The share of rows whose parent is their child value's most common one."""
    total = sum(sum(counter.values()) for counter in seen.values())
    return sum(counter.most_common(1)[0][1] for counter in seen.values()) / total if total else 0.0


def follows(rows: Rows, child: str, parent: str, child_values: int) -> bool:
    """Whether `parent` is found to be a function of `child`: on the rows that have both, 99 % follow their child
    value's most common parent, each child value has MIN_ROWS_PER_VALUE rows on average (else any column would
    follow from it), and the parent is not near-constant (else it follows from anything)."""
    seen = parents_by_child(rows, child, parent)
    parent_counts = sum(seen.values(), Counter())
    total = parent_counts.total()
    if not total or child_values > total / MIN_ROWS_PER_VALUE:
        return False
    if parent_counts.most_common(1)[0][1] > NEAR_CONSTANT * total:
        return False
    return agreement(seen) >= FUNCTION_AGREEMENT


def two_parents(rows: Rows, child: str, parent: str) -> tuple[float, list[str]]:
    """How far `parent` is a function of `child`: `agreement`, and the child values seen with two or more
    parents."""
    seen = parents_by_child(rows, child, parent)
    return agreement(seen), sorted(c for c, counter in seen.items() if len(counter) > 1)


def infer_schema(header: Sequence[str], rows: Rows, overrides: TaxonomyFile | None = None) -> Inferred:
    """The schema of a catalogue with columns `header`; raises SchemaError (one line) for what cannot be
    learnt: no id column, a declared attribute with one value, a separator that splits nothing, a declared
    parent that is not a function of its child."""
    overrides = overrides or TaxonomyFile()
    notes: list[str] = []
    missing = [c for c in overrides.named if c not in header]
    if missing:
        where = f" ({overrides.path})" if overrides.path else ""
        raise SchemaError(f"the taxonomy file{where} names column {', '.join(map(repr, missing))}, which the catalogue "
                          f"does not have; it has {', '.join(header)}")
    id_column = overrides.id or _id_column(header, rows)
    columns = [c for c in header if c != id_column and c not in overrides.exclude]
    notes += [f"{c}: left out (the taxonomy file excludes it)" for c in overrides.exclude]
    values = {c: cells(rows, c) for c in columns}
    caption = overrides.caption if overrides.caption is not None else _caption_column(columns, values, overrides)
    kinds: dict[str, tuple[str, str]] = {}
    for column in columns:
        if column == caption:
            continue
        declared = overrides.attributes.get(column)
        kind = _kind(column, values[column], len(rows), declared, notes)
        if kind:
            kinds[column] = kind
    parents = _parents(kinds, rows, {c: len(set(values[c])) for c in kinds}, overrides, notes)
    roles = _roles(kinds, parents, overrides)
    attributes = tuple(Attribute(c, kind, separator, parents.get(c, ""), roles.get(c, ""))
                       for c, (kind, separator) in kinds.items())
    schema = CatalogueSchema(id_column, attributes, caption or "")
    return Inferred(schema, [f"{id_column}: the id", *notes,
                             *([f"{caption}: the caption's text (free text)"] if caption else [])])


def _id_column(header: Sequence[str], rows: Rows) -> str:
    for column in header:
        if ID_NAMES.match(column):
            values = cells(rows, column)
            if len(values) == len(rows) and len(set(values)) == len(values):
                return column
    raise SchemaError(f"no id column: none of {', '.join(header)} is named id, sku or *_id with a unique value on "
                      'every row; name it with "id" in taxonomy.json')


def _caption_column(columns: Sequence[str], values: Mapping[str, list[str]], overrides: TaxonomyFile) -> str:
    """The free-text column with the longest values: mostly distinct, several words each."""
    candidates = [c for c in columns if c not in overrides.attributes and values[c]
                  and len(set(values[c])) > MAX_SHARE_DISTINCT * len(values[c])
                  and _mean_words(values[c]) >= MIN_CAPTION_WORDS]
    return max(candidates, key=lambda c: _mean_words(values[c]), default="")


def _kind(column: str, values: list[str], rows: int, declared, notes: list[str]) -> tuple[str, str] | None:
    """(kind, separator) of an attribute column, or None with a note saying why it is left out."""
    distinct = len(set(values))
    if (declared is not None and declared.kind == MULTI) or (declared and declared.separator):
        separator = declared.separator or _separator(values, rows) or ""
        if not separator or not any(separator in v for v in values):
            given = f"'{separator}'" if separator else "(none given)"
            raise SchemaError(f"attribute {column} is declared multi-valued, but its separator {given} splits none "
                              "of its cells")
        notes.append(f"{column}: multi-valued, separated by {separator!r} (the taxonomy file says so)")
        return MULTI, separator
    if declared is not None:
        if distinct < 2:
            raise SchemaError(f"attribute {column} is declared, but has {distinct} value{'s' if distinct != 1 else ''}"
                              f"{': ' + values[0] if values else ''}; an attribute needs at least two")
        notes.append(f"{column}: single-valued, {distinct} values (the taxonomy file declares it)")
        return SINGLE, ""
    if not values:
        notes.append(f"{column}: left out (empty)")
    elif distinct < 2:
        notes.append(f"{column}: left out (one value, {values[0]!r}: nothing to predict)")
    elif _numeric(values):
        notes.append(f"{column}: left out (numeric; declare it in taxonomy.json to learn it as labels)")
    elif (separator := _separator(values, rows)) is not None:
        notes.append(f"{column}: multi-valued, separated by {separator!r}")
        return MULTI, separator
    elif distinct > MAX_SHARE_DISTINCT * len(values):
        notes.append(f"{column}: left out (near-unique: {distinct} distinct values in {len(values)} rows)")
    else:
        notes.append(f"{column}: single-valued, {distinct} values")
        return SINGLE, ""
    return None


def _parents(kinds: Mapping[str, tuple[str, str]], rows: Rows, distinct: Mapping[str, int], overrides: TaxonomyFile,
             notes: list[str]) -> dict[str, str]:
    """attribute -> the attribute it follows from: declared ones checked, the rest found; each attribute has at
    most one that follows from it (a chain). `distinct`: each attribute's number of values."""
    single = [c for c, (kind, _) in kinds.items() if kind == SINGLE]
    parents: dict[str, str] = {}
    for column, declared in overrides.attributes.items():
        if declared.derived_from:
            child = declared.derived_from
            if child not in single or column not in single:
                raise SchemaError(f"attribute {column} is declared to follow from {child}: both must be single-valued "
                                  "attributes")
            agreement, ambiguous = two_parents(rows, child, column)
            if agreement < FUNCTION_AGREEMENT:
                shown = ", ".join(ambiguous[:8]) + (f" and {len(ambiguous) - 8} more" if len(ambiguous) > 8 else "")
                raise SchemaError(f"{column} is declared to follow from {child}, but is not a function of it: "
                                  f"{child} {shown} {'has' if len(ambiguous) == 1 else 'have'} two or more {column}s "
                                  f"({agreement:.1%} of rows agree)")
            parents[column] = child
            notes.append(f"{column}: follows from {child} (the taxonomy file says so)")
    children_taken = set(parents.values())
    for parent in sorted(single, key=lambda c: distinct[c]):
        if parent in parents:
            continue
        candidates = [c for c in single if c != parent and distinct[parent] < distinct[c]
                      and c not in children_taken and parents.get(c) != parent
                      and follows(rows, c, parent, distinct[c])]
        if candidates:
            child = min(candidates, key=lambda c: distinct[c])  # the closest: a parent's own children
            parents[parent] = child
            children_taken.add(child)
            notes.append(f"{parent}: follows from {child} (each {child} has one {parent})")
    return parents


def _roles(kinds: Mapping[str, tuple[str, str]], parents: Mapping[str, str], overrides: TaxonomyFile) -> dict[str, str]:
    roles: dict[str, str] = {}
    declared = {c: o.role for c, o in overrides.attributes.items() if o.role is not None}
    roles.update({c: r for c, r in declared.items() if r})
    single = [c for c, (kind, _) in kinds.items() if kind == SINGLE and c not in parents and c not in declared]
    for role, pattern in ROLE_NAMES.items():
        if role not in roles.values():
            found = [c for c in single if pattern.search(c) and c not in roles]
            if found:
                roles[found[0]] = role
    if "product" not in roles.values():
        roots = [c for c in single if c in parents.values() and c not in roles]  # the bottom of a tree
        if roots:
            roles[max(roots, key=lambda c: _depth(c, parents))] = "product"
    return roles


def _depth(column: str, parents: Mapping[str, str]) -> int:
    children = {child: parent for parent, child in parents.items()}
    depth = 0
    while column in children:
        column, depth = children[column], depth + 1
    return depth
