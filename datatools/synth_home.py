"""A synthetic home-goods catalogue with a schema of its own: products.csv + images/{sku}.png.

Columns: sku (the id), title (free text: the caption), product_type with its department (a derived parent),
material (a texture), colour_family (the fill), style (multi-valued, "|"-separated: marks drawn on the product),
and two columns a model should not learn: price (numeric) and barcode (unique). Every value shows in the
pixels: the silhouette is the product type, the fill its colour family, the texture its material, and each
style its own mark. Each product also gets details of its own (proportions, a logo's place, texture phase), so
that two products of one type differ as two real ones do. Nothing downstream knows the schema: inference finds
it from the rows (`enrich_data.schema_inference`).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

CSV_FILE = "products.csv"
COLUMNS = ("sku", "title", "product_type", "department", "material", "colour_family", "style", "price", "barcode")
# product type -> (department, relative frequency, noun in titles)
PRODUCT_TYPES: dict[str, tuple[str, int, str]] = {
    "Mug": ("Kitchen", 5, "Mug"), "Bowl": ("Kitchen", 4, "Bowl"), "Vase": ("Decor", 4, "Vase"),
    "Lamp": ("Lighting", 4, "Table Lamp"), "Cushion": ("Textiles", 5, "Cushion"), "Rug": ("Textiles", 3, "Rug"),
    "Clock": ("Decor", 3, "Wall Clock"), "Stool": ("Furniture", 3, "Stool"), "Shelf": ("Furniture", 2, "Shelf"),
    "Teapot": ("Kitchen", 2, "Teapot"),
}
COLOUR_FAMILIES: dict[str, tuple[int, int, int]] = {
    "Charcoal": (50, 52, 56), "Ivory": (238, 232, 214), "Terracotta": (190, 90, 60), "Sage": (140, 165, 130),
    "Ocean": (40, 95, 160), "Mustard": (214, 168, 40), "Blush": (232, 170, 170), "Walnut": (105, 70, 45),
}
MATERIALS = ("Ceramic", "Wood", "Linen", "Metal", "Glass")
STYLES = ("Striped", "Dotted", "Bordered", "Monogram")
BRANDS = ("Hearth & Co", "Nordhus", "Casa Lumo", "Oakline", "Studio Kiln", "Maison Vert")


@dataclass(frozen=True)
class HomeProduct:
    sku: str
    product_type: str
    material: str
    colour: str
    styles: tuple[str, ...]
    title: str
    price: str
    barcode: str
    detail: tuple[float, ...]  # proportions, logo place, texture phase: this product's own


def make_product(rng: random.Random, n: int) -> HomeProduct:
    product_type = rng.choices(list(PRODUCT_TYPES), weights=[v[1] for v in PRODUCT_TYPES.values()])[0]
    material = rng.choice(MATERIALS)
    colour = rng.choice(list(COLOUR_FAMILIES))
    styles = tuple(s for s in STYLES if rng.random() < 0.3)
    brand = rng.choice(BRANDS)
    title = " ".join([brand, colour, material, *styles[:1], PRODUCT_TYPES[product_type][2]])
    detail = tuple(rng.uniform(0.0, 1.0) for _ in range(6))
    return HomeProduct(f"HG-{n:06d}", product_type, material, colour, styles, title,
                       f"{rng.uniform(5, 400):.2f}", f"{rng.randrange(10 ** 12, 10 ** 13)}", detail)


def _outline(product_type: str, d: tuple[float, ...]) -> list[tuple[str, list[float]]]:
    """Shapes in a unit square; `d` varies proportions per product."""
    w, h = 0.5 + 0.2 * d[0], 0.5 + 0.2 * d[1]
    x0, y0 = 0.5 - w / 2, 0.5 - h / 2
    x1, y1 = 0.5 + w / 2, 0.5 + h / 2
    shapes = {
        "Mug": [("rect", [x0, y0, x1 - 0.12, y1]), ("ring", [x1 - 0.16, 0.4, x1 + 0.06, 0.62])],
        "Bowl": [("chord", [x0 - 0.05, 0.15, x1 + 0.05, 0.85])],
        "Vase": [("poly", [0.42, 0.1, 0.58, 0.1, 0.56, 0.3, x1, 0.6, 0.58, 0.92, 0.42, 0.92, x0, 0.6, 0.44, 0.3])],
        "Lamp": [("poly", [0.3, 0.12, 0.7, 0.12, 0.82, 0.45, 0.18, 0.45]), ("rect", [0.46, 0.45, 0.54, 0.85]),
                 ("rect", [0.32, 0.85, 0.68, 0.92])],
        "Cushion": [("rect", [0.15, 0.2, 0.85, 0.8]), ("ellipse", [0.12, 0.17, 0.2, 0.25]),
                    ("ellipse", [0.8, 0.75, 0.88, 0.83])],
        "Rug": [("rect", [0.05, 0.3, 0.95, 0.7])],
        "Clock": [("ellipse", [0.15, 0.15, 0.85, 0.85]), ("hands", [0.5, 0.5])],
        "Stool": [("rect", [0.2, 0.25, 0.8, 0.35]), ("rect", [0.25, 0.35, 0.31, 0.9]),
                  ("rect", [0.69, 0.35, 0.75, 0.9])],
        "Shelf": [("rect", [0.1, 0.2, 0.9, 0.26]), ("rect", [0.1, 0.5, 0.9, 0.56]), ("rect", [0.1, 0.8, 0.9, 0.86]),
                  ("rect", [0.1, 0.2, 0.15, 0.86]), ("rect", [0.85, 0.2, 0.9, 0.86])],
        "Teapot": [("ellipse", [0.25, 0.35, 0.75, 0.85]), ("poly", [0.72, 0.55, 0.95, 0.35, 0.97, 0.4, 0.74, 0.68]),
                   ("ring", [0.08, 0.45, 0.3, 0.7]), ("ellipse", [0.44, 0.28, 0.56, 0.38])],
    }
    return shapes[product_type]


def _texture(pixels: np.ndarray, inside: np.ndarray, material: str, phase: float) -> None:
    """Each material's own surface, in place on the product's pixels, at the image's own resolution (finer marks
    would not survive downscaling)."""
    height, width, _ = pixels.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = height / 64  # marks keep their size in pixels of a 64-pixel-high image

    def shade(where: np.ndarray, factor: float) -> None:
        pixels[inside & where] = np.clip(pixels[inside & where] * factor, 0, 255).astype(np.uint8)

    if material == "Wood":  # grain: wavy dark bands about 8 pixels apart
        shade(np.sin((ys + 3 * scale * np.sin(xs / (6 * scale) + phase * 6)) / (1.3 * scale)) > 0.5, 0.55)
    elif material == "Linen":  # a weave: a grid of darker threads, 2 pixels wide
        period = max(4, round(5 * scale))
        shade((xs.astype(int) % period < 2) | (ys.astype(int) % period < 2), 0.7)
    elif material == "Metal":  # brushed: a bright band and a dark one
        shade(np.abs(xs - width * (0.3 + 0.3 * phase)) < width * 0.07, 1.6)
        shade(np.abs(xs - width * (0.55 + 0.3 * phase)) < width * 0.04, 0.55)
    elif material == "Glass":  # see-through: the background shows, with a white glare
        pixels[inside] = ((pixels[inside].astype(int) + 2 * 245) // 3).astype(np.uint8)
        pixels[inside & (np.abs((xs - ys) - width * (0.1 + 0.3 * phase)) < 1.5 * scale)] = (255, 255, 255)
    elif material == "Ceramic":  # a glaze: one round highlight
        cy, cx = height * (0.35 + 0.1 * phase), width * (0.4 + 0.1 * phase)
        shade((ys - cy) ** 2 + (xs - cx) ** 2 < (3 * scale) ** 2, 1.5)


def _styles(pixels: np.ndarray, inside: np.ndarray, styles: tuple[str, ...], d: tuple[float, ...],
            accent: tuple[int, int, int]) -> None:
    height, width, _ = pixels.shape
    ys, xs = np.mgrid[0:height, 0:width]
    period = max(8, height // 5)
    frame = max(3, height // 18)
    if "Striped" in styles:
        pixels[inside & (ys % period < period // 3)] = accent
    if "Dotted" in styles:
        dots = (xs % period - period // 2) ** 2 + (ys % period - period // 2) ** 2 < (period // 3.5) ** 2
        pixels[inside & dots] = accent
    if "Bordered" in styles:  # a band along the product's own outline, whatever its shape
        mask = Image.fromarray((inside * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(2 * frame + 1))
        pixels[inside & (np.asarray(mask) == 0)] = accent
    if "Monogram" in styles:  # a small logo square at this product's own place
        cy, cx = int(height * (0.35 + 0.3 * d[2])), int(width * (0.35 + 0.3 * d[3]))
        size = max(8, height // 5)
        block = np.zeros_like(inside)
        block[cy:cy + size, cx:cx + size] = True
        pixels[block & inside] = accent
        pixels[cy + size // 3:cy + 2 * size // 3, cx + size // 3:cx + 2 * size // 3] = (255, 255, 255)


def draw_product(product: HomeProduct, size: tuple[int, int], rng: random.Random) -> Image.Image:
    width, height = size
    scale = 3
    # Each photo's own studio: its backdrop's tone, the product's size and place in the frame.
    backdrop = tuple(min(255, max(0, c + rng.randint(-6, 6))) for c in (246, 246, 243))
    canvas = Image.new("RGB", (width * scale, height * scale), backdrop)
    pen = ImageDraw.Draw(canvas)
    fill = tuple(min(255, max(0, c + rng.randint(-10, 10))) for c in COLOUR_FAMILIES[product.colour])
    outline = tuple(int(c * 0.55) for c in fill)
    box = min(width, height) * scale * (0.72 + 0.24 * product.detail[4])
    ox = (width * scale - box) / 2 + rng.uniform(-0.08, 0.08) * box
    oy = (height * scale - box) / 2 + rng.uniform(-0.08, 0.08) * box

    def xy(coords: list[float]) -> list[float]:
        return [ox + c * box if i % 2 == 0 else oy + c * box for i, c in enumerate(coords)]

    for kind, coords in _outline(product.product_type, product.detail):
        if kind == "rect":
            pen.rectangle(xy(coords), fill=fill, outline=outline, width=scale)
        elif kind == "ellipse":
            pen.ellipse(xy(coords), fill=fill, outline=outline, width=scale)
        elif kind == "chord":
            pen.chord(xy(coords), 0, 180, fill=fill, outline=outline, width=scale)
        elif kind == "ring":
            pen.ellipse(xy(coords), outline=fill, width=int(box * 0.04))
        elif kind == "poly":
            pen.polygon(xy(coords), fill=fill, outline=outline, width=scale)
        elif kind == "hands":
            cx, cy = xy(coords)
            angle = product.detail[5] * 2 * np.pi
            pen.line([cx, cy, cx + np.cos(angle) * box * 0.25, cy + np.sin(angle) * box * 0.25], fill=outline,
                     width=scale * 2)
    pixels = np.asarray(canvas.resize((width, height), Image.Resampling.LANCZOS)).copy()
    inside = (np.abs(pixels.astype(int) - backdrop).sum(axis=2) > 12)
    _texture(pixels, inside, product.material, product.detail[5])
    accent = (245, 245, 240) if sum(fill) < 380 else (30, 30, 36)
    _styles(pixels, inside, product.styles, product.detail, accent)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.3)))


def write_home_catalogue(out: Path, count: int, seed: int = 0, image_size: tuple[int, int] = (64, 64),
                         progress: bool = True) -> Path:
    """Write products.csv and images/{sku}.png under `out`; returns `out`."""
    rng = random.Random(seed)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    with (out / CSV_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for n in tqdm(range(count), desc="synth (home)", unit="img", disable=not progress):
            product = make_product(rng, n)
            draw_product(product, image_size, rng).save(images / f"{product.sku}.png")
            writer.writerow([product.sku, product.title, product.product_type, PRODUCT_TYPES[product.product_type][0],
                             product.material, product.colour, "|".join(product.styles), product.price,
                             product.barcode])
    return out
