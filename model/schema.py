"""What Enrich predicts: attribute names, label vocabularies and the article taxonomy.

Torch-free on purpose: the data loader, the synthetic generator, the trainer and the server all read
these definitions, and none of them should need a model to know what a label is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# styles.csv column -> EnrichResponse.Metadata field.
CLASSIFIED_ATTRIBUTES: tuple[str, ...] = ("gender", "baseColour", "season", "usage", "articleType")
DERIVED_ATTRIBUTES: tuple[str, ...] = ("subCategory", "masterCategory")
CAPTION_ATTRIBUTE = "productDisplayName"
# What a product page shows first: the caption is made to agree with these, and a model that has not learnt
# them is not usable.
HEADLINE_ATTRIBUTES: tuple[str, ...] = ("gender", "baseColour", "articleType")
ALL_LABEL_ATTRIBUTES: tuple[str, ...] = CLASSIFIED_ATTRIBUTES + DERIVED_ATTRIBUTES
STYLES_COLUMNS: tuple[str, ...] = (
    "id", "gender", "masterCategory", "subCategory", "articleType",
    "baseColour", "season", "year", "usage", "productDisplayName",
)
PROTO_FIELD = {
    "gender": "gender",
    "baseColour": "base_colour",
    "season": "season",
    "usage": "usage",
    "articleType": "article_type",
    "subCategory": "sub_category",
    "masterCategory": "master_category",
    "productDisplayName": "product_display_name",
}

# The closed vocabularies of the Fashion Product Images catalogue (styles.csv).
GENDERS = ("Men", "Women", "Boys", "Girls", "Unisex")
SEASONS = ("Summer", "Fall", "Winter", "Spring")
USAGES = ("Casual", "Sports", "Ethnic", "Formal", "Smart Casual", "Party", "Travel", "Home")
MASTER_CATEGORIES = (
    "Apparel", "Accessories", "Footwear", "Personal Care", "Free Items", "Sporting Goods", "Home",
)
BASE_COLOURS = (
    "Black", "White", "Blue", "Brown", "Grey", "Red", "Green", "Pink", "Navy Blue", "Purple", "Silver",
    "Yellow", "Beige", "Gold", "Maroon", "Orange", "Olive", "Multi", "Cream", "Steel", "Charcoal",
    "Peach", "Off White", "Skin", "Lavender", "Grey Melange", "Khaki", "Teal", "Magenta", "Tan",
    "Mustard", "Burgundy", "Coffee Brown", "Turquoise Blue", "Rust", "Copper", "Metallic", "Bronze",
    "Nude", "Rose", "Mauve", "Sea Green", "Lime Green", "Taupe", "Mushroom Brown", "Fluorescent Green",
)
# A reference sRGB value per baseColour name: what the synthetic catalogue paints, and what palette colours are
# named by. "Multi" has none.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "Black": (20, 20, 22), "White": (246, 246, 240), "Blue": (40, 90, 200), "Brown": (110, 70, 40),
    "Grey": (128, 128, 128), "Red": (200, 30, 35), "Green": (40, 140, 60), "Pink": (240, 140, 180),
    "Navy Blue": (25, 35, 90), "Purple": (110, 50, 150), "Silver": (192, 192, 200), "Yellow": (240, 215, 40),
    "Beige": (225, 205, 170), "Gold": (210, 170, 60), "Maroon": (110, 20, 35), "Orange": (245, 130, 30),
    "Olive": (110, 115, 40), "Cream": (245, 235, 205), "Steel": (110, 125, 140),
    "Charcoal": (55, 58, 62), "Peach": (250, 190, 150), "Off White": (235, 230, 215), "Skin": (225, 180, 150),
    "Lavender": (185, 160, 220), "Grey Melange": (150, 150, 150), "Khaki": (190, 175, 120),
    "Teal": (0, 120, 120), "Magenta": (200, 0, 130), "Tan": (200, 160, 110), "Mustard": (215, 170, 30),
    "Burgundy": (120, 20, 50), "Coffee Brown": (80, 50, 30), "Turquoise Blue": (40, 190, 200),
    "Rust": (180, 80, 30), "Copper": (185, 110, 60), "Metallic": (160, 165, 175), "Bronze": (160, 110, 50),
    "Nude": (230, 195, 170), "Rose": (230, 100, 130), "Mauve": (180, 130, 160), "Sea Green": (60, 170, 120),
    "Lime Green": (150, 220, 50), "Taupe": (140, 125, 110), "Mushroom Brown": (150, 125, 100),
    "Fluorescent Green": (90, 255, 60),
}


@dataclass
class LabelVocab:
    """The ordered labels of one attribute; index i is logit i of its head."""

    name: str
    labels: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, label: str | None) -> int:
        """Label -> class index; -100 (ignored by the loss) for missing or unseen labels."""
        return self.index.get(label, -100) if label else -100

    @classmethod
    def from_values(cls, name: str, values: Iterable[str | None], min_count: int = 1) -> LabelVocab:
        """Most frequent first, ties by name, so the vocabulary is stable for a given training set."""
        counts = Counter(v for v in values if v)
        kept = sorted((v for v, n in counts.items() if n >= min_count), key=lambda v: (-counts[v], v))
        return cls(name, kept)


@dataclass
class Taxonomy:
    """articleType -> (subCategory, masterCategory), learnt from data.

    In the real catalogue this is not a function (a few articleTypes sit under several
    subCategories), so each articleType maps to its most common parent.
    """

    parents: dict[str, tuple[str, str]]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str | None]]) -> Taxonomy:
        counts: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        for row in rows:
            article, sub, master = row.get("articleType"), row.get("subCategory"), row.get("masterCategory")
            if article and sub and master:
                counts[article][(sub, master)] += 1
        parents = {
            article: min(c, key=lambda parent: (-c[parent], parent)) for article, c in sorted(counts.items())
        }
        return cls(parents)

    def sub_category(self, article_type: str) -> str:
        return self.parents[article_type][0]

    def master_category(self, article_type: str) -> str:
        return self.parents[article_type][1]

    def parent(self, attribute: str, article_type: str) -> str:
        """The derived label of `attribute` (subCategory or masterCategory) for an articleType."""
        sub, master = self.parents[article_type]
        return {"subCategory": sub, "masterCategory": master}[attribute]

    def parent_labels(self, attribute: str) -> list[str]:
        """The labels a derived attribute can take, sorted."""
        return sorted({self.parent(attribute, article) for article in self.parents})

    def to_json(self) -> dict[str, list[str]]:
        return {article: list(parent) for article, parent in self.parents.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, list[str]]) -> Taxonomy:
        return cls({article: (parent[0], parent[1]) for article, parent in data.items()})
