"""A synthetic home-goods catalogue with a schema of its own: products.csv + images/{sku}.png.

Columns: sku (the id), title (free text: the caption), product_type with its department (a derived parent),
material (a texture), colour_family (the fill), style (multi-valued, "|"-separated: marks drawn on the product),
and two columns a model should not learn: price (numeric) and barcode (unique). Every value shows in the
pixels: the silhouette is the product type, the fill its colour family, the texture its material, and each
style its own mark. Each product also gets details of its own (proportions, a logo's place, the texture's lie), so
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

from .synth import is_light

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
    detail: tuple[float, ...]  # proportions, logo place, size in frame, texture phase: this product's own
    stretch: tuple[float, float]  # the silhouette's scale across and down
    corners: tuple[float, ...]  # offsets in the unit square, one per coordinate of the silhouette (cycled)


def make_product(rng: random.Random, n: int) -> HomeProduct:
    product_type = rng.choices(list(PRODUCT_TYPES), weights=[v[1] for v in PRODUCT_TYPES.values()])[0]
    material = rng.choice(MATERIALS)
    colour = rng.choice(list(COLOUR_FAMILIES))
    styles = tuple(s for s in STYLES if rng.random() < 0.3)
    brand = rng.choice(BRANDS)
    title = " ".join([brand, colour, material, *styles[:1], PRODUCT_TYPES[product_type][2]])
    detail = tuple(rng.uniform(0.0, 1.0) for _ in range(6))
    stretch = (rng.uniform(0.82, 1.06), rng.uniform(0.86, 1.06))
    corners = tuple(rng.uniform(-0.035, 0.035) for _ in range(7))
    return HomeProduct(f"HG-{n:06d}", product_type, material, colour, styles, title,
                       f"{rng.uniform(5, 400):.2f}", f"{rng.randrange(10 ** 12, 10 ** 13)}", detail, stretch, corners)


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
        "Stool": [("rect", [0.15, 0.2, 0.85, 0.42]), ("rect", [0.22, 0.42, 0.32, 0.9]),
                  ("rect", [0.68, 0.42, 0.78, 0.9])],
        "Shelf": [("rect", [0.1, 0.15, 0.9, 0.27]), ("rect", [0.1, 0.46, 0.9, 0.58]), ("rect", [0.1, 0.77, 0.9, 0.89]),
                  ("rect", [0.1, 0.15, 0.18, 0.89]), ("rect", [0.82, 0.15, 0.9, 0.89])],
        "Teapot": [("ellipse", [0.25, 0.35, 0.75, 0.85]), ("poly", [0.72, 0.55, 0.95, 0.35, 0.97, 0.4, 0.74, 0.68]),
                   ("ring", [0.08, 0.45, 0.3, 0.7]), ("ellipse", [0.44, 0.28, 0.56, 0.38])],
    }
    return shapes[product_type]


@dataclass(frozen=True)
class _Extent:
    """Where the product lies in the image: marks are placed and sized by it, so they show on small and thin
    products as on large ones."""

    top: int
    left: int
    height: int
    width: int

    @classmethod
    def of(cls, inside: np.ndarray) -> _Extent:
        rows, columns = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if not len(rows):
            return cls(0, 0, *inside.shape)
        return cls(int(rows[0]), int(columns[0]), int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1))

    def nearest_inside(self, inside: np.ndarray, y: float, x: float) -> tuple[int, int]:
        """The product pixel nearest the place (y, x), given as shares of the product's box."""
        ys, xs = np.nonzero(inside)
        if not len(ys):
            return int(self.top + y * self.height), int(self.left + x * self.width)
        target_y, target_x = self.top + y * self.height, self.left + x * self.width
        n = int(np.argmin((ys - target_y) ** 2 + (xs - target_x) ** 2))
        return int(ys[n]), int(xs[n])


def _texture(pixels: np.ndarray, inside: np.ndarray, material: str, phase: float,
             fill: tuple[int, int, int]) -> None:
    """Each material's own surface, in place on the product's pixels, at the image's own resolution (finer marks
    would not survive downscaling). Marks move the fill towards its contrast (white on dark fills, black on light
    ones), and light falls white except on the palest fills, where it shows as a shade: every mark shows on every
    colour, and the fill stays the product's colour."""
    height, width, _ = pixels.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = height / 64  # marks keep their size in pixels of a 64-pixel-high image
    extent = _Extent.of(inside)
    light = is_light(fill)
    shine, shine_strength = (255.0, 1.0) if sum(fill) <= 600 else (0.0, 0.5)

    def blend(where: np.ndarray, strength: np.ndarray | float, toward: float) -> None:
        chosen = inside & where
        amount = strength[chosen][:, None] if isinstance(strength, np.ndarray) else strength
        pixels[chosen] = ((1 - amount) * pixels[chosen] + amount * toward).clip(0, 255).astype(np.uint8)

    if material == "Wood":  # grain: wavy vertical lines about 6 pixels apart
        grain = np.sin((xs + 2.5 * scale * np.sin(ys / (5 * scale) + phase * 6)) * 2 * np.pi / (6 * scale))
        blend(grain > 0.5, 0.5, 0.0 if light else 255.0)
    elif material == "Linen":  # a weave: a grid of threads
        period = max(4, round(5 * scale))
        threads = (xs.astype(int) % period < 2) | (ys.astype(int) % period < 2)
        blend(threads, 0.4, 0.0 if light else 255.0)
    elif material == "Metal":  # brushed: fine horizontal streaks, and one bright band down the product
        streaks = (ys.astype(int) - extent.top) % max(3, round(3 * scale)) == 0
        blend(streaks, 0.35, 0.0 if light else 255.0)
        across = (xs - extent.left) / max(1, extent.width) - (0.3 + 0.4 * phase)
        blend(np.abs(across) < 0.12, 0.55 * shine_strength, shine)
    elif material == "Glass":  # glare: two diagonal bands of white light across the product
        diagonal = ((xs - extent.left) + (ys - extent.top) - (extent.width + extent.height) * (0.35 + 0.2 * phase))
        bands = (np.abs(diagonal) < 2.5 * scale) | (np.abs(diagonal - 9 * scale) < 1.5 * scale)
        blend(bands, 0.7 * shine_strength, shine)
    elif material == "Ceramic":  # a glaze: a round, soft-edged highlight on the product's upper half
        cy, cx = extent.nearest_inside(inside, 0.3, 0.3 + 0.4 * phase)
        radius = max(3 * scale, 0.3 * min(extent.height, extent.width))
        glow = np.clip(1 - np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) / radius, 0, 1)
        blend(glow > 0, 0.8 * shine_strength * np.sqrt(glow), shine)


def _styles(pixels: np.ndarray, inside: np.ndarray, styles: tuple[str, ...], d: tuple[float, ...],
            accent: tuple[int, int, int]) -> None:
    """Each style its own mark in the accent colour, sized by the product so that a small one shows it too."""
    height, width, _ = pixels.shape
    ys, xs = np.mgrid[0:height, 0:width]
    extent = _Extent.of(inside)
    period = max(7, min(height // 5, max(extent.height, extent.width) // 4))
    frame = max(2, min(height // 18, min(extent.height, extent.width) // 6))
    if "Striped" in styles:
        pixels[inside & ((ys - extent.top) % period < max(2, period // 4))] = accent
    if "Dotted" in styles:
        cell_y, cell_x = (ys - extent.top) % period - period // 2, (xs - extent.left) % period - period // 2
        pixels[inside & (cell_y ** 2 + cell_x ** 2 < (period / 4.5) ** 2)] = accent
    if "Bordered" in styles:  # a band along the product's own outline, whatever its shape
        mask = Image.fromarray((inside * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(2 * frame + 1))
        pixels[inside & (np.asarray(mask) == 0)] = accent
    if "Monogram" in styles:  # a logo square with a white centre, at this product's own place on it
        size = max(7, min(height // 5, min(extent.height, extent.width) // 2))
        cy, cx = extent.nearest_inside(inside, 0.3 + 0.4 * d[2], 0.3 + 0.4 * d[3])
        top, left = max(0, cy - size // 2), max(0, cx - size // 2)
        block, centre = np.zeros_like(inside), np.zeros_like(inside)
        block[top:top + size, left:left + size] = True
        centre[top + size // 3:top + size - size // 3, left + size // 3:left + size - size // 3] = True
        pixels[inside & block] = accent
        pixels[inside & centre] = (255, 255, 255)


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
        moved = [0.5 + (c + product.corners[i % len(product.corners)] - 0.5) * product.stretch[i % 2]
                 for i, c in enumerate(coords)]
        return [ox + c * box if i % 2 == 0 else oy + c * box for i, c in enumerate(moved)]

    def ordered_box(coords: list[float]) -> list[float]:
        """Moved corners can cross on a thin part: Pillow needs them in order, and at least a pixel apart."""
        x0, y0, x1, y1 = xy(coords)
        return [min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1]

    for kind, coords in _outline(product.product_type, product.detail):
        if kind == "rect":
            pen.rectangle(ordered_box(coords), fill=fill, outline=outline, width=scale)
        elif kind == "ellipse":
            pen.ellipse(ordered_box(coords), fill=fill, outline=outline, width=scale)
        elif kind == "chord":
            pen.chord(ordered_box(coords), 0, 180, fill=fill, outline=outline, width=scale)
        elif kind == "ring":
            pen.ellipse(ordered_box(coords), outline=fill, width=int(box * 0.04))
        elif kind == "poly":
            pen.polygon(xy(coords), fill=fill, outline=outline, width=scale)
        elif kind == "hands":
            cx, cy = xy(coords)
            angle = product.detail[5] * 2 * np.pi
            pen.line([cx, cy, cx + np.cos(angle) * box * 0.25, cy + np.sin(angle) * box * 0.25], fill=outline,
                     width=scale * 2)
    pixels = np.asarray(canvas.resize((width, height), Image.Resampling.LANCZOS)).copy()
    inside = (np.abs(pixels.astype(int) - backdrop).sum(axis=2) > 12)
    accent = (30, 30, 36) if is_light(fill) else (245, 245, 240)
    _styles(pixels, inside, product.styles, product.detail, accent)
    _texture(pixels, inside, product.material, product.detail[5], fill)  # over the marks: styles hide no material
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
