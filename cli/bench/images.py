"""Benchmark images: synthetic catalogue shots (240x320, like the catalogue) and camera-size JPEGs."""

from __future__ import annotations

import io
import random

from PIL import Image


def catalogue_images(count: int, size: tuple[int, int] = (240, 320), seed: int = 0) -> list[bytes]:
    from enrich_data.synth import draw, make_row

    rng = random.Random(seed)
    images = []
    for n in range(count):
        row, pattern = make_row(rng, n)
        buffer = io.BytesIO()
        draw(row, pattern, size, rng).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def camera_images(count: int, size: tuple[int, int] = (4000, 3000), seed: int = 1) -> list[bytes]:
    """Product shots enlarged to camera resolution, with sensor-like colour noise so they compress like
    photos (a few MB each, 12 MP), not like flat drawings."""
    from enrich_data.synth import draw, make_row

    rng = random.Random(seed)
    noise = Image.merge("RGB", [Image.effect_noise(size, 24).convert("L") for _ in range(3)])
    images = []
    for n in range(count):
        row, pattern = make_row(rng, n)
        shot = draw(row, pattern, (size[0] // 5, size[1] // 5), rng).resize(size, Image.Resampling.BICUBIC)
        photo = Image.blend(shot, noise, 0.25)
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=92)
        images.append(buffer.getvalue())
    return images
