"""A synthetic catalogue in the Fashion Product Images layout (styles.csv + images/{id}.jpg).

The pixels carry the labels the way product photos do: the silhouette tells the articleType, the fill
the baseColour, the size and cut hint at gender, prints show up in the name. The other attributes are
drawn from distributions conditioned on those, as in the real catalogue. Most products also carry a logo or
motif of their own, so that two products of one type and colour differ as two real ones do. The file keeps the
real file's quirks (unquoted commas in names, missing labels, ids without an image) so that the loader is
exercised on them. Nothing downstream knows the data is synthetic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from enrich_model.fashion import BASE_COLOURS, COLOUR_RGB, STYLES_COLUMNS

from . import photolike

# name: (subCategory, masterCategory, relative frequency in the real catalogue, noun in names)
ARTICLES: dict[str, tuple[str, str, int, str]] = {
    "Tshirts": ("Topwear", "Apparel", 7067, "T-shirt"),
    "Shirts": ("Topwear", "Apparel", 3217, "Shirt"),
    "Casual Shoes": ("Shoes", "Footwear", 2845, "Casual Shoes"),
    "Watches": ("Watches", "Accessories", 2542, "Watch"),
    "Sports Shoes": ("Shoes", "Footwear", 2036, "Sports Shoes"),
    "Kurtas": ("Topwear", "Apparel", 1844, "Kurta"),
    "Tops": ("Topwear", "Apparel", 1762, "Top"),
    "Handbags": ("Bags", "Accessories", 1759, "Handbag"),
    "Heels": ("Shoes", "Footwear", 1323, "Heels"),
    "Sunglasses": ("Eyewear", "Accessories", 1073, "Sunglasses"),
    "Wallets": ("Wallets", "Accessories", 936, "Wallet"),
    "Flip Flops": ("Flip Flops", "Footwear", 916, "Flip Flops"),
    "Belts": ("Belts", "Accessories", 813, "Belt"),
    "Backpacks": ("Bags", "Accessories", 724, "Backpack"),
    "Socks": ("Socks", "Accessories", 686, "Socks"),
    "Formal Shoes": ("Shoes", "Footwear", 637, "Formal Shoes"),
    "Perfume and Body Mist": ("Fragrance", "Personal Care", 614, "Perfume"),
    "Jeans": ("Bottomwear", "Apparel", 609, "Jeans"),
    "Shorts": ("Bottomwear", "Apparel", 547, "Shorts"),
    "Trousers": ("Bottomwear", "Apparel", 530, "Trousers"),
    "Dresses": ("Dress", "Apparel", 464, "Dress"),
    "Track Pants": ("Bottomwear", "Apparel", 304, "Track Pants"),
    "Caps": ("Headwear", "Accessories", 283, "Cap"),
    "Ties": ("Ties", "Accessories", 263, "Tie"),
    "Skirts": ("Bottomwear", "Apparel", 128, "Skirt"),
}
# As in the real file, a few articleTypes also appear under a second parent ("Free Gifts").
SECONDARY_PARENT = {"Socks": ("Free Gifts", "Free Items"), "Wallets": ("Free Gifts", "Free Items")}

MULTI_UNDERCOAT = (0, 0, 0)
# Share of each colour in the real catalogue (per mille, rounded; the tail is lumped evenly).
COLOUR_WEIGHTS = dict.fromkeys(BASE_COLOURS, 4) | {
    "Black": 219, "White": 123, "Blue": 103, "Brown": 78, "Grey": 62, "Red": 58, "Green": 47, "Pink": 42,
    "Navy Blue": 41, "Purple": 37, "Silver": 32, "Yellow": 18, "Beige": 17, "Gold": 14, "Maroon": 14,
    "Orange": 11, "Olive": 9, "Multi": 9, "Cream": 9, "Steel": 7, "Charcoal": 5,
}
DARK = {"Black", "Navy Blue", "Brown", "Maroon", "Charcoal", "Coffee Brown", "Burgundy", "Olive", "Grey"}
BRIGHT = {"White", "Yellow", "Pink", "Orange", "Peach", "Lime Green", "Turquoise Blue", "Fluorescent Green"}

BRANDS = {
    "Apparel": ["Nike", "Puma", "Roadster", "Wrangler", "Fabindia", "United Colors of Benetton", "Jealous 21"],
    "Footwear": ["Nike", "Adidas", "Puma", "Catwalk", "Red Tape", "Woodland", "Bata"],
    "Accessories": ["Titan", "Fastrack", "Baggit", "Lino Perros", "Ray-Ban", "Skagen", "Wildcraft"],
    "Personal Care": ["Davidoff", "Lakme", "Elizabeth Arden", "Calvin Klein"],
}
DESCRIPTORS = {
    "Tshirts": ["Printed", "Round Neck", "Polo", "Graphic"], "Shirts": ["Slim Fit", "Checked", "Casual"],
    "Kurtas": ["Printed", "Embroidered", "Straight"], "Tops": ["Sleeveless", "Casual"],
    "Casual Shoes": ["Canvas", "Leather", "Slip-On"], "Sports Shoes": ["Running", "Training"],
    "Formal Shoes": ["Leather", "Derby"], "Heels": ["Stiletto", "Wedge"], "Watches": ["Analog", "Dial"],
    "Handbags": ["Leather", "Tote"], "Jeans": ["Slim Fit", "Skinny"], "Trousers": ["Formal", "Chino"],
    "Track Pants": ["Training", "Sports"], "Sunglasses": ["Aviator", "Wayfarer"],
}
PRINTED = ("Striped", "Polka Dot")


@dataclass(frozen=True)
class Row:
    id: int
    gender: str
    master: str
    sub: str
    article: str
    colour: str
    season: str
    year: int
    usage: str
    name: str


def _choice(rng: random.Random, weights: dict[str, float]) -> str:
    labels = list(weights)
    return rng.choices(labels, weights=[weights[k] for k in labels])[0]


def _gender(rng: random.Random, article: str) -> str:
    if article in {"Dresses", "Heels", "Skirts", "Handbags", "Tops"}:
        return _choice(rng, {"Women": 90, "Girls": 10})
    if article in {"Ties", "Formal Shoes", "Wallets"}:
        return _choice(rng, {"Men": 90, "Women": 6, "Unisex": 4})
    if article in {"Backpacks", "Sunglasses", "Caps", "Socks"}:
        return _choice(rng, {"Men": 45, "Women": 20, "Unisex": 30, "Boys": 5})
    return _choice(rng, {"Men": 58, "Women": 30, "Boys": 7, "Girls": 5})


def _season(rng: random.Random, article: str, colour: str) -> str:
    weights = {"Summer": 30, "Fall": 25, "Winter": 20, "Spring": 10}
    if article in {"Shorts", "Flip Flops", "Tops", "Sunglasses", "Caps"}:
        weights["Summer"] += 50
    if article in {"Track Pants", "Jeans", "Formal Shoes", "Backpacks"}:
        weights["Winter"] += 25
        weights["Fall"] += 25
    weights["Fall" if colour in DARK else "Summer" if colour in BRIGHT else "Spring"] += 25
    return _choice(rng, weights)


def _usage(rng: random.Random, article: str) -> str:
    if article in {"Sports Shoes", "Track Pants", "Caps", "Backpacks"}:
        return _choice(rng, {"Sports": 75, "Casual": 25})
    if article == "Kurtas":
        return _choice(rng, {"Ethnic": 90, "Casual": 10})
    if article in {"Formal Shoes", "Ties", "Trousers", "Shirts"}:
        return _choice(rng, {"Formal": 55, "Casual": 35, "Smart Casual": 10})
    if article in {"Heels", "Dresses"}:
        return _choice(rng, {"Casual": 70, "Party": 30})
    return _choice(rng, {"Casual": 92, "Travel": 4, "Smart Casual": 4})


def make_row(rng: random.Random, item_id: int) -> tuple[Row, str | None]:
    """One catalogue row and the print drawn on it (None for plain)."""
    article = _choice(rng, {a: v[2] for a, v in ARTICLES.items()})
    sub, master, _, noun = ARTICLES[article]
    if article in SECONDARY_PARENT and rng.random() < 0.05:
        sub, master = SECONDARY_PARENT[article]
    colour = _choice(rng, COLOUR_WEIGHTS)
    gender = _gender(rng, article)
    pattern = rng.choice(PRINTED) if master == "Apparel" and colour != "Multi" and rng.random() < 0.2 else None
    brand = rng.choice(BRANDS.get(master, BRANDS["Accessories"]))
    descriptor = pattern or rng.choice([*DESCRIPTORS.get(article, ["Solid", "Casual"]), ""])
    words = [brand, gender, colour, descriptor, noun]
    name = " ".join(w for w in words if w)
    row = Row(item_id, gender, master, sub, article, colour, _season(rng, article, colour),
              rng.randint(2010, 2018), _usage(rng, article), name)
    return row, pattern


# --- drawing -----------------------------------------------------------------------------------------
# Shapes are polygons/boxes in a unit square (x right, y down), scaled onto the canvas.
Shape = list[tuple[str, list[float]]]


def _top(article: str) -> Shape:
    top = [(0.3, 0.12), (0.42, 0.1), (0.5, 0.16), (0.58, 0.1), (0.7, 0.12)]
    hem = {"Kurtas": 0.95, "Dresses": 0.95}.get(article, 0.82)
    sleeve = {"Tops": 0.0, "Dresses": 0.0, "Kurtas": 0.5, "Shirts": 0.55}.get(article, 0.3)
    flare = 0.1 if article == "Dresses" else 0.0
    body = [*top, (0.7, 0.3), (0.72 + flare, hem), (0.28 - flare, hem), (0.3, 0.3)]
    parts: Shape = [("poly", [c for p in body for c in p])]
    if sleeve:
        parts += [("poly", [0.3, 0.12, 0.12, 0.12 + sleeve, 0.2, 0.16 + sleeve, 0.31, 0.3]),
                  ("poly", [0.7, 0.12, 0.88, 0.12 + sleeve, 0.8, 0.16 + sleeve, 0.69, 0.3])]
    if article == "Shirts":
        parts += [("detail", [0.5, 0.16, 0.5, hem]), ("poly", [0.42, 0.1, 0.5, 0.2, 0.58, 0.1])]
    if article == "Kurtas":
        parts += [("detail", [0.5, 0.16, 0.5, 0.4])]
    return parts


def _bottom(article: str) -> Shape:
    if article == "Skirts":
        return [("poly", [0.35, 0.15, 0.65, 0.15, 0.8, 0.75, 0.2, 0.75])]
    leg = 0.5 if article == "Shorts" else 0.95
    parts: Shape = [("poly", [0.3, 0.08, 0.7, 0.08, 0.74, leg, 0.53, leg, 0.5, 0.3, 0.47, leg, 0.26, leg])]
    if article == "Jeans":
        parts += [("detail", [0.33, 0.14, 0.42, 0.22]), ("detail", [0.67, 0.14, 0.58, 0.22])]
    if article == "Track Pants":
        parts += [("stripe", [0.27, 0.1, 0.27, 0.93]), ("stripe", [0.73, 0.1, 0.73, 0.93])]
    return parts


def _shape(article: str) -> Shape:
    if article in {"Tshirts", "Shirts", "Tops", "Kurtas", "Dresses"}:
        return _top(article)
    if article in {"Jeans", "Trousers", "Track Pants", "Shorts", "Skirts"}:
        return _bottom(article)
    if article in {"Casual Shoes", "Sports Shoes", "Formal Shoes"}:
        toe = 0.95 if article == "Formal Shoes" else 0.9
        parts = [("poly", [0.08, 0.42, 0.3, 0.4, 0.45, 0.5, toe - 0.05, 0.56, toe, 0.66, 0.08, 0.66])]
        if article == "Sports Shoes":
            parts += [("stripe", [0.08, 0.66, toe, 0.66]), ("detail", [0.35, 0.46, 0.5, 0.55])]
        return parts
    if article in {"Heels", "Flip Flops"}:
        if article == "Heels":
            return [("poly", [0.15, 0.35, 0.3, 0.36, 0.85, 0.62, 0.85, 0.68, 0.3, 0.5, 0.22, 0.72, 0.17, 0.72])]
        return [("ellipse", [0.2, 0.15, 0.45, 0.9]), ("ellipse", [0.55, 0.15, 0.8, 0.9]),
                ("detail", [0.32, 0.3, 0.24, 0.5]), ("detail", [0.68, 0.3, 0.76, 0.5])]
    if article == "Watches":
        return [("rect", [0.42, 0.05, 0.58, 0.95]), ("ellipse", [0.3, 0.32, 0.7, 0.68]),
                ("face", [0.35, 0.37, 0.65, 0.63])]
    if article in {"Handbags", "Backpacks", "Wallets"}:
        if article == "Wallets":
            return [("rect", [0.15, 0.3, 0.85, 0.7]), ("detail", [0.15, 0.45, 0.85, 0.45])]
        if article == "Backpacks":
            return [("ellipse", [0.2, 0.1, 0.8, 0.4]), ("rect", [0.2, 0.25, 0.8, 0.9]),
                    ("detail", [0.3, 0.6, 0.7, 0.6])]
        return [("poly", [0.15, 0.4, 0.85, 0.4, 0.9, 0.85, 0.1, 0.85]), ("ring", [0.3, 0.15, 0.7, 0.6])]
    if article == "Sunglasses":
        return [("ellipse", [0.1, 0.38, 0.45, 0.62]), ("ellipse", [0.55, 0.38, 0.9, 0.62]),
                ("detail", [0.45, 0.45, 0.55, 0.45])]
    if article == "Belts":
        return [("rect", [0.05, 0.45, 0.95, 0.55]), ("face", [0.1, 0.42, 0.22, 0.58])]
    if article == "Socks":
        return [("poly", [0.4, 0.1, 0.6, 0.1, 0.6, 0.65, 0.75, 0.75, 0.7, 0.88, 0.4, 0.8])]
    if article == "Perfume and Body Mist":
        return [("rect", [0.3, 0.35, 0.7, 0.9]), ("rect", [0.43, 0.2, 0.57, 0.35])]
    if article == "Caps":
        return [("ellipse", [0.2, 0.3, 0.75, 0.75]), ("poly", [0.6, 0.55, 0.95, 0.6, 0.6, 0.68])]
    if article == "Ties":
        return [("poly", [0.45, 0.08, 0.55, 0.08, 0.6, 0.8, 0.5, 0.92, 0.4, 0.8])]
    raise KeyError(article)


class Graphic(NamedTuple):
    """A logo or motif: its shape (ellipse, rect or diamond), centre and half-size, in the unit square."""

    kind: str
    x: float
    y: float
    size: float


@dataclass(frozen=True)
class Detail:
    """What makes one product its own beyond its labels, as two real products of one type and colour differ: on
    most, a graphic (a logo or print motif) in a tone of its own colour, and each corner of its silhouette moved by
    up to 0.6 % of the frame. Proportions stay the template's: an article type's cut and a gender's fit are told by
    them."""

    corners: tuple[float, ...]  # offsets in the unit square, one per coordinate of the silhouette (cycled)
    graphic: Graphic | None

    @classmethod
    def draw(cls, rng: random.Random) -> Detail:
        # Below collars, waistbands and pockets, which tell the type.
        graphic = Graphic(rng.choice(("ellipse", "rect", "diamond")), rng.uniform(0.4, 0.6),
                          rng.uniform(0.4, 0.62), rng.uniform(0.08, 0.15)) if rng.random() < 0.75 else None
        return cls(tuple(rng.uniform(-0.006, 0.006) for _ in range(7)), graphic)


def is_light(fill: tuple[int, int, int]) -> bool:
    """Whether marks on this fill are drawn dark (else light): the one rule for both generators' marks."""
    return sum(fill) >= 384


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)
    return r, g, b


def draw(row: Row, pattern: str | None, size: tuple[int, int], rng: random.Random,
         detail: Detail | None = None) -> Image.Image:
    """Render one product shot: a silhouette on a near-white studio background; `detail`: the product's own
    details (None: the article type's template as it is)."""
    width, height = size
    scale = 4  # draw large, downsample: anti-aliased edges like a real photo
    canvas = Image.new("RGB", (width * scale, height * scale), _jitter((250, 250, 250), rng, 5))
    pen = ImageDraw.Draw(canvas)
    # Kids' items are smaller in frame, women's cuts narrower: a weak, learnable gender cue.
    shrink = {"Boys": 0.78, "Girls": 0.78}.get(row.gender, 1.0)
    narrow = 0.88 if row.gender in {"Women", "Girls"} and row.master == "Apparel" else 1.0
    box = min(width, height) * scale * rng.uniform(0.85, 0.98) * shrink
    ox = (width * scale - box * narrow) / 2 + rng.uniform(-0.05, 0.05) * box
    oy = (height * scale - box) / 2 + rng.uniform(-0.05, 0.05) * box

    def xy(coords: list[float]) -> list[float]:
        if detail is not None:
            coords = [c + detail.corners[i % len(detail.corners)] for i, c in enumerate(coords)]
        return [ox + c * box * narrow if i % 2 == 0 else oy + c * box for i, c in enumerate(coords)]

    fill = _jitter(COLOUR_RGB.get(row.colour, MULTI_UNDERCOAT), rng)  # Multi: printed over below
    outline = tuple(int(c * 0.6) for c in fill)
    for kind, coords in _shape(row.article):
        if kind == "poly":
            pen.polygon(xy(coords), fill=fill, outline=outline, width=scale)
        elif kind == "rect":
            pen.rectangle(xy(coords), fill=fill, outline=outline, width=scale)
        elif kind == "ellipse":
            pen.ellipse(xy(coords), fill=fill, outline=outline, width=scale)
        elif kind == "ring":
            pen.ellipse(xy(coords), outline=fill, width=int(box * 0.05))
        elif kind == "face":
            pen.ellipse(xy(coords), fill=(235, 235, 230), outline=outline, width=scale)
        elif kind == "detail":
            pen.line(xy(coords), fill=outline, width=scale * 2)
        elif kind == "stripe":
            pen.line(xy(coords), fill=(245, 245, 245), width=scale * 3)
    if row.colour == "Multi" or pattern:
        canvas = _print_over(canvas, row, pattern, rng)
    if detail is not None and detail.graphic is not None:
        canvas = _graphic(canvas, detail.graphic, xy, fill)
    image = canvas.resize((width, height), Image.Resampling.LANCZOS)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.6)))


def _graphic(canvas: Image.Image, graphic: Graphic, xy: Callable[[list[float]], list[float]], fill: tuple[int, int, int]
             ) -> Image.Image:
    """A logo or motif on the product only (where the canvas is not background), in the fill's own tone moved
    towards its contrast: the product's colour stays its colour."""
    kind, cx, cy, size = graphic
    layer = Image.new("L", canvas.size, 0)
    pen = ImageDraw.Draw(layer)
    if kind == "diamond":
        pen.polygon(xy([cx, cy - size, cx + size, cy, cx, cy + size, cx - size, cy]), fill=255)
    else:
        getattr(pen, "ellipse" if kind == "ellipse" else "rectangle")(xy([cx - size, cy - size, cx + size, cy + size]),
                                                                       fill=255)
    pixels = np.asarray(canvas).copy()
    marked = (np.asarray(layer) > 0) & ~(pixels > 240).all(axis=2)
    contrast = 0.0 if is_light(fill) else 255.0
    pixels[marked] = (0.55 * pixels[marked] + 0.45 * contrast).astype(np.uint8)
    return Image.fromarray(pixels)


def _print_over(canvas: Image.Image, row: Row, pattern: str | None, rng: random.Random) -> Image.Image:
    """Stripes or dots inside the silhouette only (pixels that are not background)."""
    pixels = np.asarray(canvas).copy()
    height, width, _ = pixels.shape
    inside = ~(pixels > 240).all(axis=2)
    ys, xs = np.mgrid[0:height, 0:width]
    period = max(4, int(height / rng.uniform(8, 14)))
    if row.colour == "Multi":
        palette = np.array([COLOUR_RGB[c] for c in ("Red", "Yellow", "Blue", "Green", "White", "Orange")], np.uint8)
        pixels[inside] = palette[(ys // period) % len(palette)][inside]
        return Image.fromarray(pixels)
    accent = (245, 245, 240) if COLOUR_RGB[row.colour][0] < 128 else (25, 25, 30)
    if pattern == "Striped":
        # Accent stripes a third of the period wide: baseColour is the dominant colour, as in catalogues.
        # (Half-and-half stripes made a white shirt with black stripes the same picture as a black one with
        # white stripes, and its label a coin toss.)
        marked = ys % period < max(1, period // 3)
    else:
        marked = (xs % period - period // 2) ** 2 + (ys % period - period // 2) ** 2 < (period // 4) ** 2
    pixels[inside & marked] = accent
    return Image.fromarray(pixels)


def write_catalogue(
    out: Path,
    count: int,
    seed: int = 0,
    image_size: tuple[int, int] = (60, 80),
    missing_image_rate: float = 0.003,
    missing_label_rate: float = 0.005,
    comma_name_rate: float = 0.005,
    progress: bool = True,
    photo_like: bool = False,
) -> Path:
    """Write styles.csv and images/{id}.jpg under `out` with the real file's quirks; returns `out`.

    `photo_like`: each image is a photo-like variant of the studio shot (see `enrich_data.photolike`);
    rows and labels are those the same seed gives without it."""
    rng = random.Random(seed)
    variants = random.Random(seed + 1_000_003)  # its own stream: the rows stay those of the clean catalogue
    details = random.Random(seed + 2_000_003)  # its own stream too: details leave each row as the seed draws it
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = [",".join(STYLES_COLUMNS)]
    for n in tqdm(range(count), desc="synth", unit="img", disable=not progress):
        item_id = 10000 + n
        row, pattern = make_row(rng, item_id)
        image = draw(row, pattern, image_size, rng, Detail.draw(details))
        if photo_like:
            image = photolike.photo_like(image, variants)
        if rng.random() >= missing_image_rate:
            image.save(images / f"{item_id}.jpg", quality=90)
        name = row.name
        if rng.random() < comma_name_rate:
            name = name.replace(f" {row.colour} ", f" {row.colour}, ", 1)  # written unquoted, as in the real file
        fields = [str(row.id), row.gender, row.master, row.sub, row.article, row.colour, row.season,
                  str(row.year), row.usage, name]
        for column in (5, 6, 8):  # baseColour, season, usage: sometimes blank in the real file
            if rng.random() < missing_label_rate:
                fields[column] = ""
        lines.append(",".join(fields))
    (out / "styles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
