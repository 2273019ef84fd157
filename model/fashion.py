"""The Fashion Product Images catalogue (styles.csv): its schema, vocabularies and colours.

The defaults of a catalogue in that layout, and what the synthetic generator draws; the engine itself reads
every schema from its bundle (`schema.CatalogueSchema`). Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping

from .schema import Attribute, CatalogueSchema, Taxonomy

CAPTION_ATTRIBUTE = "productDisplayName"
# styles.csv's columns, in the file's order (year is not predicted).
STYLES_COLUMNS: tuple[str, ...] = (
    "id", "gender", "masterCategory", "subCategory", "articleType",
    "baseColour", "season", "year", "usage", CAPTION_ATTRIBUTE,
)
# The attributes, their tree and roles: what a product page shows first (gender, baseColour, articleType) is what
# captions are made to agree with.
# The closed vocabularies of the Fashion Product Images catalogue (styles.csv).
GENDERS = ("Men", "Women", "Boys", "Girls", "Unisex")
SEASONS = ("Summer", "Fall", "Winter", "Spring")
USAGES = ("Casual", "Sports", "Ethnic", "Formal", "Smart Casual", "Party", "Travel", "Home")
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

FASHION_SCHEMA = CatalogueSchema(
    "id",
    (Attribute("gender", role="gender"), Attribute("baseColour", role="colour"), Attribute("season"),
     Attribute("usage"), Attribute("articleType", role="product"),
     Attribute("subCategory", derived_from="articleType"), Attribute("masterCategory", derived_from="subCategory")),
    caption=CAPTION_ATTRIBUTE,
)


def legacy_taxonomy(data: Mapping[str, list[str]]) -> Taxonomy:
    """The taxonomy of bundles written before schemas were data: articleType -> [subCategory, masterCategory]."""
    return Taxonomy({"subCategory": {a: p[0] for a, p in data.items()},
                     "masterCategory": {a: p[1] for a, p in data.items()}})
