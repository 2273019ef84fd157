"""What a bundle predicts: its catalogue's schema (which columns are attributes, of what kind, which follow from
which, which one the caption learns), the label vocabularies and the tree of derived labels.

All of it is data: the trainer infers or reads it from the catalogue (`enrich_data.schema_inference`) and the
bundle carries it in enrich.json, from which every later stage reads it. The Fashion Product Images catalogue's
schema is one value of it (`fashion.FASHION_SCHEMA`). Torch-free on purpose.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

SINGLE, MULTI = "single", "multi"
KINDS = (SINGLE, MULTI)
# What captions and names are checked against: the person it is for, its colour, what the product is.
ROLES = ("gender", "colour", "product")
RARE_ACTIONS = ("drop", "other")  # what happens to a value with fewer examples than the minimum
OTHER = "other"  # the label rare values fold into, with rare "other"


class SchemaError(ValueError):
    """A schema that cannot describe a model; the message says what is wrong, in one line."""


@dataclass(frozen=True)
class Attribute:
    """One catalogue column the model predicts."""

    name: str
    kind: str = SINGLE  # single: one label per item; multi: any number of values per item
    separator: str = ""  # multi: what joins a cell's values ("|")
    derived_from: str = ""  # set: the label follows from that attribute's (subCategory from articleType)
    role: str = ""  # one of ROLES, or ""

    @property
    def derived(self) -> bool:
        return bool(self.derived_from)

    @property
    def multi(self) -> bool:
        return self.kind == MULTI

    def values(self, cell: str | None) -> list[str]:
        """A cell's values: one for a single-valued attribute (none when empty), split for a multi-valued one."""
        if not cell or not cell.strip():
            return []
        if not self.multi:
            return [cell.strip()]
        return list(dict.fromkeys(v.strip() for v in cell.split(self.separator) if v.strip()))


@dataclass(frozen=True)
class CatalogueSchema:
    id_column: str
    attributes: tuple[Attribute, ...]
    caption: str = ""  # the free-text column the caption decoder learns ("": none)

    def __post_init__(self) -> None:
        self.check()

    def __getitem__(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(a.name == name for a in self.attributes)

    def __iter__(self) -> Iterator[Attribute]:
        return iter(self.attributes)

    @property
    def names(self) -> tuple[str, ...]:
        """Every attribute, in the schema's order."""
        return tuple(a.name for a in self.attributes)

    @property
    def classified(self) -> tuple[str, ...]:
        """The attributes with a head of their own."""
        return tuple(a.name for a in self.attributes if not a.derived)

    @property
    def derived(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes if a.derived)

    @property
    def multi(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes if a.multi)

    @property
    def single(self) -> tuple[str, ...]:
        """The classified attributes with one label per item."""
        return tuple(a.name for a in self.attributes if not a.derived and not a.multi)

    @property
    def headline(self) -> tuple[str, ...]:
        """The attributes with a role, in ROLES' order: what captions agree with and names are audited against."""
        return tuple(self.roles.values())

    @property
    def roles(self) -> dict[str, str]:
        """role -> attribute, for the roles this schema has, in ROLES' order."""
        named = {a.role: a.name for a in self.attributes if a.role}
        return {role: named[role] for role in ROLES if role in named}

    @property
    def columns(self) -> tuple[str, ...]:
        """The catalogue columns the model reads: id, attributes, caption."""
        return (self.id_column, *self.names, *((self.caption,) if self.caption else ()))

    @property
    def tree(self) -> tuple[str, ...]:
        """The tree of labels answers file a product by, most specific first: the product attribute's chain, or
        else the longest chain (Fashion Product Images: articleType, subCategory, masterCategory); () if none."""
        product = self.roles.get("product")
        if product and len(self.chain(self.root(product))) > 1:
            return self.chain(self.root(product))
        chains = [self.chain(name) for name in self.classified]
        longest = max(chains, key=len, default=())
        return longest if len(longest) > 1 else ()

    def root(self, name: str) -> str:
        """The classified attribute a derived one follows from, through its chain of parents (itself when
        classified)."""
        attribute = self[name]
        while attribute.derived:
            attribute = self[attribute.derived_from]
        return attribute.name

    def chain(self, name: str) -> tuple[str, ...]:
        """`name` and the attributes that follow from it, most specific first (articleType, subCategory,
        masterCategory)."""
        out = [name]
        while True:
            children = [a.name for a in self.attributes if a.derived_from == out[-1]]
            if not children:
                return tuple(out)
            out.append(children[0])

    def check(self) -> None:
        names = [a.name for a in self.attributes]
        seen = Counter(names)
        if not names:
            raise SchemaError("the schema has no attributes: a model needs at least one column to predict")
        twice = sorted(n for n, c in seen.items() if c > 1)
        if twice:
            raise SchemaError(f"attribute {', '.join(twice)} is declared twice")
        if self.id_column in seen or (self.caption and self.caption in seen):
            raise SchemaError(f"column {self.id_column if self.id_column in seen else self.caption!r} is both an "
                              "attribute and the id or caption column")
        roles = Counter(a.role for a in self.attributes if a.role)
        for attribute in self.attributes:
            if attribute.kind not in KINDS:
                raise SchemaError(f"attribute {attribute.name}: kind {attribute.kind!r} is not one of "
                                  f"{', '.join(KINDS)}")
            if attribute.multi and not attribute.separator:
                raise SchemaError(f"attribute {attribute.name} is multi-valued but names no separator")
            if attribute.role and attribute.role not in ROLES:
                raise SchemaError(f"attribute {attribute.name}: role {attribute.role!r} is not one of "
                                  f"{', '.join(ROLES)}")
            if attribute.role and roles[attribute.role] > 1:
                raise SchemaError(f"role {attribute.role} is given to more than one attribute")
            if attribute.role and attribute.derived:
                raise SchemaError(f"attribute {attribute.name}: a derived attribute cannot have the role "
                                  f"{attribute.role} (give it to the attribute it follows from)")
            if attribute.role and attribute.multi:
                raise SchemaError(f"attribute {attribute.name}: a multi-valued attribute cannot have the role "
                                  f"{attribute.role} (a caption names one)")
            if attribute.derived:
                if attribute.derived_from not in seen:
                    raise SchemaError(f"attribute {attribute.name} follows from {attribute.derived_from!r}, which "
                                      "is not an attribute")
                if attribute.multi or self[attribute.derived_from].multi:
                    raise SchemaError(f"attribute {attribute.name}: only single-valued attributes can follow "
                                      "from one another")
        for name in names:  # no cycles, and a chain has no branches
            walked = {name}
            attribute = self[name]
            while attribute.derived:
                attribute = self[attribute.derived_from]
                if attribute.name in walked:
                    raise SchemaError(f"attribute {name}: its parents form a cycle")
                walked.add(attribute.name)
            children = [a.name for a in self.attributes if a.derived_from == name]
            if len(children) > 1:
                raise SchemaError(f"attribute {name} has two parents declared ({', '.join(children)}): chain them "
                                  f"instead ({children[1]} from {children[0]})")

    def to_json(self) -> dict:
        return {"id_column": self.id_column, "caption": self.caption,
                "attributes": [{k: v for k, v in asdict(a).items() if v or k == "name"} for a in self.attributes]}

    @classmethod
    def from_json(cls, data: Mapping) -> CatalogueSchema:
        return cls(str(data["id_column"]), tuple(Attribute(**a) for a in data["attributes"]),
                   str(data.get("caption", "")))

    def describe(self) -> list[str]:
        """One line per column, for people."""
        lines = [f"  {self.id_column:<24} id"]
        for attribute in self.attributes:
            what = "multi-valued, separated by " + repr(attribute.separator) if attribute.multi else "single-valued"
            if attribute.derived:
                what = f"follows from {attribute.derived_from}"
            if attribute.role:
                what += f" (role: {attribute.role})"
            lines.append(f"  {attribute.name:<24} {what}")
        if self.caption:
            lines.append(f"  {self.caption:<24} the caption's text")
        return lines


@dataclass
class LabelVocab:
    """The ordered labels of one attribute; index i is logit i of its head."""

    name: str
    labels: list[str]
    separator: str = ""  # a multi-valued attribute's: its head scores each value on its own
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {label: i for i, label in enumerate(self.labels)}

    @property
    def multi(self) -> bool:
        return bool(self.separator)

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, label: str | None) -> int:
        """Label -> class index; -100 (ignored by the loss) for missing or unseen labels."""
        return self.index.get(label, -100) if label else -100

    def encode_values(self, values: Iterable[str]) -> list[int]:
        """A multi-valued attribute's values -> the indices of those in the vocabulary."""
        return [self.index[v] for v in values if v in self.index]

    @classmethod
    def from_values(cls, name: str, values: Iterable[str | None], min_count: int = 1,
                    separator: str = "") -> LabelVocab:
        """Most frequent first, ties by name, so the vocabulary is stable for a given training set."""
        counts = Counter(v for v in values if v)
        kept = sorted((v for v, n in counts.items() if n >= min_count), key=lambda v: (-counts[v], v))
        return cls(name, kept, separator)


@dataclass
class Taxonomy:
    """Each derived attribute's label for each label of its root attribute, learnt from data:
    {"subCategory": {"Tshirts": "Topwear", ...}, "masterCategory": {"Tshirts": "Apparel", ...}}.

    In real catalogues a derived attribute is not always a function of its root (a few articleTypes sit under
    several subCategories), so each root label takes its most common parents, as one tuple along its chain,
    so that the tree stays a tree.
    """

    parents: dict[str, dict[str, str]]

    @classmethod
    def from_rows(cls, schema: CatalogueSchema, rows: Iterable[Mapping[str, str | None]]) -> Taxonomy:
        chains = {root: schema.chain(root)[1:] for root in schema.classified if schema.chain(root)[1:]}
        counts: dict[str, dict[str, Counter[tuple[str, ...]]]] = {root: defaultdict(Counter) for root in chains}
        alone: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)  # (derived, root label) -> its values
        for row in rows:
            for root, derived in chains.items():
                values = (row.get(root), *(row.get(d) for d in derived))
                if all(values):
                    counts[root][values[0]][values[1:]] += 1
                for name, value in zip(derived, values[1:], strict=True):
                    if values[0] and value:
                        alone[(name, values[0])][value] += 1
        parents: dict[str, dict[str, str]] = {d: {} for derived in chains.values() for d in derived}
        for root, derived in chains.items():
            for label, seen in sorted(counts[root].items()):
                best = min(seen, key=lambda chain: (-seen[chain], chain))
                for name, value in zip(derived, best, strict=True):
                    parents[name][label] = value
        # Root labels never seen with their whole chain: each level's most common value on its own.
        for (name, label), seen in alone.items():
            parents[name].setdefault(label, min(seen, key=lambda value: (-seen[value], value)))
        return cls(parents)

    def parent(self, attribute: str, root_label: str) -> str:
        """The label of derived `attribute` for a label of its root."""
        return self.parents[attribute][root_label]

    def parent_labels(self, attribute: str) -> list[str]:
        """The labels a derived attribute can take, sorted."""
        return sorted(set(self.parents[attribute].values()))

    def covers(self, attribute: str, root_label: str) -> bool:
        return root_label in self.parents.get(attribute, {})

    def restricted(self, root_labels: Mapping[str, Iterable[str]]) -> Taxonomy:
        """Only the root labels the model predicts ({derived attribute: its root's labels})."""
        kept = {a: set(labels) for a, labels in root_labels.items()}
        return Taxonomy({a: {label: p for label, p in parents.items() if label in kept[a]}
                         for a, parents in self.parents.items()})

    def lift(self, schema: CatalogueSchema, attribute: str, label: str) -> dict[str, str]:
        """`label` of `attribute` with the labels of the attributes that follow from it ({attribute: label})."""
        chain = schema.chain(attribute)
        root = schema.root(attribute)
        out = {attribute: label}
        for name in chain[1:]:
            rows = [r for r, p in self.parents.get(attribute, {}).items() if p == label] if attribute != root \
                else [label]
            values = {self.parents[name][r] for r in rows if r in self.parents[name]}
            out[name] = values.pop() if len(values) == 1 else ""
        return out

    def to_json(self) -> dict[str, dict[str, str]]:
        return {a: dict(p) for a, p in self.parents.items()}

    @classmethod
    def from_json(cls, data: Mapping) -> Taxonomy:
        return cls({str(a): {str(k): str(v) for k, v in p.items()} for a, p in data.items()})
