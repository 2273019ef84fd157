"""What the decode stage reads from the pixels themselves, without the model: the product's colour palette
and perceptual hashes of the photo and of the product alone, for audits and duplicate finding. Torch-free;
runs in the server's decode threads."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from .answers import ImageLook, PaletteColour

PALETTE_SIDE = 96  # pixels per side the palette is computed at: enough for shares, cheap to cluster
MAX_COLOURS = 5
MIN_SHARE = 0.04  # smaller clusters are anti-aliased edges and shading, not colours of the product
BACKGROUND_DISTANCE = 40.0  # RGB distance from the background's colour from which a pixel is the product
MERGE_DELTA_E = 10.0  # clusters closer than this in CIELAB are one colour
DOMINANT_DELTA_E = 15.0  # pixels this close to the largest cluster's centre are the dominant colour
FLAT_STEP = 8.0  # largest step to a neighbouring pixel inside a flat area (RGB levels)
HASH_SIDE, HASH_BITS = 32, 8  # pHash: DCT of the 32x32 grey image, its 8x8 lowest frequencies


def look(image: Image.Image, colour_names: Mapping[str, tuple[int, int, int]], with_palette: bool = True,
         with_signature: bool = True) -> ImageLook:
    """The palette and the signature (perceptual hashes of the photo and of the product, colour fingerprint), each
    only when asked for."""
    found = ImageLook()
    if not (with_palette or with_signature):
        return found
    small = image.convert("RGB")
    small.thumbnail((PALETTE_SIDE, PALETTE_SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, np.float32)
    background = _background(rgb)
    foreground = np.linalg.norm(rgb - background, axis=2) > BACKGROUND_DISTANCE
    colours, dominant = palette(product_pixels(rgb, foreground), colour_names)  # the fingerprint's colour too
    if with_palette:
        found.palette = colours
    if with_signature:
        found.perceptual_hash = perceptual_hash(image)
        found.product_hash = product_hash(rgb, foreground, background)
        found.colour_fingerprint = colour_fingerprint(dominant, background)
    return found


# --- perceptual hash -----------------------------------------------------------------------------------
def _dct_matrix(size: int) -> np.ndarray:
    k, n = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.cos(np.pi * k * (2 * n + 1) / (2 * size))


_DCT = _dct_matrix(HASH_SIDE)


def perceptual_hash(image: Image.Image) -> str:
    """imagehash.phash's 64 bits, as its 16 hex digits (the test compares the two), without SciPy."""
    grey = np.asarray(image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS), np.float64)
    low = (_DCT @ grey @ _DCT.T)[:HASH_BITS, :HASH_BITS]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def product_hash(rgb: np.ndarray, foreground: np.ndarray, background: np.ndarray) -> str:
    """The pHash of the product alone: the bounding box of its `foreground` pixels, padded to a square with the
    background. Re-framing the photo (cropping or padding its margins) leaves it where the
    photo's own hash moves many bits; another product's proportions, print or logo move it."""
    rows, columns = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    crop = rgb if len(rows) < 2 or len(columns) < 2 else rgb[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    side = max(crop.shape[:2])
    square = np.empty((side, side, 3), np.float32)
    square[:] = background
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    return perceptual_hash(Image.fromarray(np.clip(square, 0, 255).astype(np.uint8)))


# --- palette -----------------------------------------------------------------------------------------------
def palette(product: np.ndarray,
            colour_names: Mapping[str, tuple[int, int, int]]) -> tuple[list[PaletteColour], np.ndarray]:
    """Up to MAX_COLOURS colours of the product's (N, 3) RGB pixels (`product_pixels`), largest share first:
    clustered in CIELAB, each named by the nearest reference; and the largest one's exact mean RGB."""
    lab = rgb_to_lab(product)
    centres, counts = _kmeans(lab, MAX_COLOURS)
    centres, counts = _merge(centres, counts)
    keep = counts / counts.sum() >= MIN_SHARE
    centres, counts = centres[keep], counts[keep]
    order = np.argsort(-counts)
    names = list(colour_names)
    references = rgb_to_lab(np.asarray([colour_names[n] for n in names], np.float32).reshape(-1, 3))
    out = []
    assignment = _nearest(lab, centres)
    for i in order:
        members = product[assignment == i]
        if not len(members):  # a centre left without pixels after merging: no colour of the product
            continue
        # No names: the catalogue has no colour column with colours of a known sRGB.
        nearest = names[int(np.argmin(((references - centres[i]) ** 2).sum(axis=1)))] if names else ""
        out.append(PaletteColour(_hex(members.mean(axis=0)), float(counts[i] / counts.sum()), nearest))
    # The dominant colour exactly: every pixel near the largest cluster's centre, wherever k-means drew its border.
    near = np.linalg.norm(lab - centres[order[0]], axis=1) <= DOMINANT_DELTA_E
    return out, product[near].mean(axis=0) if near.any() else product.mean(axis=0)


def _background(rgb: np.ndarray, ring: int = 2) -> np.ndarray:
    """The background's colour: the median of the image's border."""
    border = np.concatenate([rgb[:ring].reshape(-1, 3), rgb[-ring:].reshape(-1, 3),
                             rgb[:, :ring].reshape(-1, 3), rgb[:, -ring:].reshape(-1, 3)])
    return np.median(border, axis=0)


def product_pixels(rgb: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The product's pixels in an (H, W, 3) RGB array: those of `foreground` (away from the background's colour)
    inside a flat area (anti-aliased edges, shading steps and print borders are blends, not colours of the product).
    Falls back to every product pixel, then to every pixel, when too few are left."""
    padded = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")
    height, width = rgb.shape[:2]
    steps = [np.abs(rgb - padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]).max(axis=2)
             for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    flat = foreground & (np.max(steps, axis=0) < FLAT_STEP)
    enough = max(16, height * width // 100)
    for pixels in (rgb[flat], rgb[foreground]):
        if len(pixels) >= enough:
            return pixels
    return rgb.reshape(-1, 3)  # no background to tell apart: the product fills the frame


def colour_fingerprint(dominant: np.ndarray, background: np.ndarray) -> tuple[float, ...]:
    """CIELAB of the product's dominant colour (its largest flat cluster's mean) and of the background: what a
    re-encoded, resized or re-framed copy of a photo keeps, and another photo rarely has."""
    colours = rgb_to_lab(np.stack([dominant, background]))
    return tuple(round(float(v), 3) for v in colours.reshape(-1))


def _kmeans(points: np.ndarray, k: int, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm from a farthest-point start: deterministic, so the same image gives the same palette."""
    centres = [points[0]]
    distance = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, min(k, len(points))):
        centres.append(points[int(np.argmax(distance))])
        distance = np.minimum(distance, ((points - centres[-1]) ** 2).sum(axis=1))
    centres = np.asarray(centres)
    for _ in range(iterations):
        assignment = _nearest(points, centres)
        moved = np.asarray([points[assignment == i].mean(axis=0) if (assignment == i).any() else centres[i]
                            for i in range(len(centres))])
        if np.allclose(moved, centres, atol=0.1):
            break
        centres = moved
    counts = np.bincount(_nearest(points, centres), minlength=len(centres)).astype(np.float64)
    return centres, counts


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmin(((points[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)


def _merge(centres: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clusters closer than MERGE_DELTA_E become one (a flat-coloured product gives one colour, not five)."""
    centres, counts = list(centres), list(counts)
    merged = True
    while merged and len(centres) > 1:
        merged = False
        for i in range(len(centres)):
            for j in range(i + 1, len(centres)):
                if np.linalg.norm(centres[i] - centres[j]) < MERGE_DELTA_E:
                    total = counts[i] + counts[j]
                    centres[i] = (centres[i] * counts[i] + centres[j] * counts[j]) / total
                    counts[i] = total
                    del centres[j], counts[j]
                    merged = True
                    break
            if merged:
                break
    return np.asarray(centres), np.asarray(counts)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255) -> CIELAB (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.asarray([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.asarray([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _hex(rgb: np.ndarray) -> str:
    r, g, b = (round(float(v)) for v in np.clip(rgb, 0, 255))
    return f"#{r:02x}{g:02x}{b:02x}"
