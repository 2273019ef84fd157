"""Bytes -> pixels: decoding (JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF, TIFF, BMP) and model preprocessing.

Torch-free: the server decodes in worker threads and the trainer reads catalogue images through the
same two functions, so training and serving see identical pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

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


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become model input; stored in the bundle so serving matches training."""

    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "letterbox"  # fit inside, pad with white: product shots must not be cropped

    @property
    def decode_target(self) -> int:
        """Pixels per side worth decoding: JPEGs larger than twice this decode at reduced scale."""
        return max(self.input_size)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data.get("interpolation", "bicubic"),
            resize_mode=data.get("resize_mode", "letterbox"),
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> float32 array (3, H, W), normalized."""
        height, width = self.input_size
        resample = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST,
        }.get(self.interpolation, Image.Resampling.BICUBIC)
        if self.resize_mode == "stretch":
            fitted = image.resize((width, height), resample)
        else:
            fitted = ImageOps.pad(image, (width, height), method=resample, color=WHITE)
        array = np.asarray(fitted, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))
