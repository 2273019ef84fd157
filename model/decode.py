"""Bytes -> pixels: decoding JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF, TIFF and BMP to RGB.

Torch-free: the server decodes in worker threads and the trainer reads catalogue images through the
same function, so training and serving see identical pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

try:  # HEIC/HEIF (iPhone photos); optional so that a missing wheel only loses that format.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the platform's wheels
    pass

DEFAULT_MAX_PIXELS = 64_000_000  # above a 48 MP phone photo, well below a decompression bomb
WHITE = (255, 255, 255)


class ImageDecodeError(ValueError):
    """The bytes are not an image this service can read; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied
    width: int  # of the original, as stored
    height: int
    format: str  # "JPEG", "PNG", "WEBP", "HEIF", ...


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, target: int | None = None) -> DecodedImage:
    """Decode image bytes to RGB, applying EXIF orientation and flattening alpha onto white.

    `target` lets JPEGs decode at a reduced scale (DCT scaling) when the model needs far fewer pixels
    than a camera original has: a 24 MP photo decodes several times faster.
    """
    if not data:
        raise ImageDecodeError("empty image: the request carried no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
                )
            fmt = image.format or "UNKNOWN"
            if target and fmt == "JPEG":
                image.draft("RGB", (target * 2, target * 2))
            image.seek(0)  # first frame of animations
            image.load()
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            EOFError) as error:
        head = data[:12].hex()
        raise ImageDecodeError(f"not a decodable image ({len(data)} bytes, starting {head}): {error}") from error
    image = ImageOps.exif_transpose(image)
    return DecodedImage(to_rgb(image), width, height, fmt)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode -> RGB; transparent areas become white, like a catalogue's studio background."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit PNG/TIFF: scale down, don't clip
        array = np.asarray(image, dtype=np.float32)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray((array * (255.0 / (65535.0 if peak > 255 else 255.0))).astype(np.uint8))
    return image.convert("RGB")
