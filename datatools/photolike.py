"""Photo-like variants of clean product shots: the same product, photographed less tidily.

A studio catalogue is framed, lit and exposed identically; real uploads are not. A variant keeps the
labels and changes what a photographer would: the framing (the product a little smaller, off-centre,
tilted a few degrees), the light (uneven across the frame), the sensor (noise), the focus (slight blur)
and the file (JPEG re-compression). `enrich synth --photo-like` writes whole catalogues of them, to
measure whether a model learnt what the pixels show or where they sit.

Written with Pillow and numpy, independently of the trainer's torch augmentation, so a robustness
measurement is not the training distribution checking itself.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageFilter


def photo_like(image: Image.Image, rng: random.Random) -> Image.Image:
    """One photo-like variant of an RGB product shot on a light background (same size)."""
    width, height = image.size
    background = _background(image)
    # Framing: product scaled to 80-100%, moved off-centre by up to 8% of the frame, tilted up to 5 degrees.
    scale = rng.uniform(0.8, 1.0)
    small = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (width, height), background)
    dx = round((width - small.width) / 2 + rng.uniform(-0.08, 0.08) * width)
    dy = round((height - small.height) / 2 + rng.uniform(-0.08, 0.08) * height)
    canvas.paste(small, (dx, dy))
    canvas = canvas.rotate(rng.uniform(-5, 5), resample=Image.Resampling.BICUBIC, fillcolor=background)
    # Light: a brightness ramp across the frame in a random direction, 5-20% darker on one side.
    pixels = np.asarray(canvas, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = (np.cos(angle) * (xs / max(width - 1, 1)) + np.sin(angle) * (ys / max(height - 1, 1)))
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    pixels *= (1 - rng.uniform(0.05, 0.2) * ramp)[..., None]
    # Sensor noise, sigma 2-6 grey levels.
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 6), pixels.shape)
    photo = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    # Focus, then the file: slight blur, JPEG quality 60-85.
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=rng.randint(60, 85))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _background(image: Image.Image) -> tuple[int, int, int]:
    """The median colour of the image border: what the studio background looked like."""
    pixels = np.asarray(image.convert("RGB"))
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    r, g, b = (int(v) for v in np.median(border, axis=0))
    return r, g, b
