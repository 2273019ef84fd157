"""Bytes -> pixels: decoding JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF, TIFF and BMP to RGB.

Torch-free: the server decodes in worker threads and the trainer reads catalogue images through the
same function, so training and serving see identical pixels.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos); optional so that a missing wheel only loses that format.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the platform's wheels
    pass

# Damaged files make Pillow's readers warn (e.g. "Truncated File Read") as well as fail: the failure is
# reported to the caller, the warning would only fill the server's log.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# Pillow's own bomb check is one global number for every format; ours below is per format and is
# checked from the header before any pixel is allocated.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 100_000_000  # pixels actually decoded, any format (a 100 MP PNG is ~300 MB as RGB)
DEFAULT_MAX_JPEG_PIXELS = 400_000_000  # JPEG originals, which decode at up to 1/8 scale per side
WHITE = (255, 255, 255)
# Formats read (the JPEG reader also opens MPO, phones' multi-picture JPEGs): anything else (PDF, EPS,
# PSD, ICO, ...) is refused before a decoder runs.
FORMAT_WORDS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "HEIF": "HEIC/HEIF", "AVIF": "AVIF", "GIF": "GIF",
                "TIFF": "TIFF", "BMP": "BMP"}
Image.init()
# Only the readers this platform has: HEIF needs pillow-heif's wheel, AVIF a Pillow built with libavif.
ACCEPTED_FORMATS = tuple(fmt for fmt in FORMAT_WORDS if fmt in Image.OPEN)
*_others, _last = (FORMAT_WORDS[fmt] for fmt in ACCEPTED_FORMATS)
FORMATS_IN_WORDS = f"{', '.join(_others)} or {_last}"
REDUCED_SCALE_FORMATS = ("JPEG", "MPO")  # DCT scaling: 1/2, 1/4 or 1/8 per side, chosen before decoding


class DecodeFailure(str, Enum):
    """Why bytes were refused; the names are the API's error reasons (enrich.v1.ErrorReason)."""

    EMPTY = "IMAGE_EMPTY"
    UNDECODABLE = "IMAGE_UNDECODABLE"
    TOO_LARGE = "IMAGE_TOO_LARGE"


class ImageDecodeError(ValueError):
    """The bytes are not an image this service can read; the message says why, in words.

    `details` names the limit and the value seen for IMAGE_TOO_LARGE, the format guessed otherwise."""

    def __init__(self, reason: DecodeFailure, message: str, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.details = reason, message, details or {}


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_jpeg_pixels: int = DEFAULT_MAX_JPEG_PIXELS


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied
    width: int  # of the original, as stored
    height: int
    format: str  # "JPEG", "PNG", "WEBP", "HEIF", ...


def decode_image(data: bytes, limits: DecodeLimits = DecodeLimits(), target: int | None = None) -> DecodedImage:
    """Decode image bytes to RGB, applying EXIF orientation and flattening alpha onto white.

    `target` lets JPEGs decode at a reduced scale (DCT scaling) when the model needs far fewer pixels
    than a camera original has: a 24 MP photo decodes several times faster, and a 200 MP one fits the
    pixel budget. Limits are checked against what will actually be decoded, from the header alone.
    """
    if not data:
        raise ImageDecodeError(DecodeFailure.EMPTY, "empty image: the request carried no bytes")
    guessed = guess_format(data)
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as error:
        raise unreadable(data, guessed, None) from error
    except Exception as error:  # decoders (Pillow's, libheif's) raise many kinds on bad bytes
        raise unreadable(data, guessed, error) from error
    fmt = image.format or guessed
    width, height = image.size
    try:
        if target and fmt in REDUCED_SCALE_FORMATS:
            image.draft("RGB", (target * 2, target * 2))  # picks the scale; decodes nothing yet
        check_pixels(fmt, (width, height), image.size, limits)
        image.seek(0)  # first frame of animations
        image.load()
        image = ImageOps.exif_transpose(image)
    except ImageDecodeError:
        raise
    except Exception as error:  # as above
        raise unreadable(data, fmt, error) from error
    return DecodedImage(to_rgb(image), width, height, fmt)


def check_pixels(fmt: str, stored: tuple[int, int], decoded: tuple[int, int], limits: DecodeLimits) -> None:
    """Per-format pixel limits, from the header: what the decoder would allocate, not what is stored."""
    (width, height), seen, to_decode = stored, stored[0] * stored[1], decoded[0] * decoded[1]
    if fmt in REDUCED_SCALE_FORMATS and seen > limits.max_jpeg_pixels:
        raise too_large(f"the {fmt} is {width}x{height} = {megapixels(seen)}, over the limit of "
                        f"{megapixels(limits.max_jpeg_pixels)} for JPEG originals", "max_jpeg_pixels",
                        limits.max_jpeg_pixels, seen)
    if to_decode > limits.max_pixels:
        if to_decode < seen:
            how = f"even at reduced scale it would decode to {megapixels(to_decode)}"
        elif fmt in REDUCED_SCALE_FORMATS:
            how = "read from its header; decoded at full size here"
        else:
            how = "read from its header; this format is always decoded in full"
        raise too_large(f"the {fmt} image is {width}x{height} = {megapixels(seen)} ({how}), over the limit "
                        f"of {megapixels(limits.max_pixels)}", "max_image_pixels", limits.max_pixels, to_decode)


def too_large(message: str, limit: str, limit_value: int, seen: int) -> ImageDecodeError:
    return ImageDecodeError(DecodeFailure.TOO_LARGE, message,
                            {"limit": limit, "limit_value": str(limit_value), "seen": str(seen)})


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f} MP"


def unreadable(data: bytes, guessed: str, error: Exception | None) -> ImageDecodeError:
    """A reason in words: what the bytes look like and what failed, never a Python repr."""
    if guessed in ACCEPTED_FORMATS or guessed == "MPO":
        cause = plain_words(error) if error else "its header is damaged or truncated"
        message = f"the bytes look like a {guessed} image but cannot be decoded: {cause}"
    elif guessed != "unknown":
        message = f"the bytes are {guessed}, not a format this service reads; send {FORMATS_IN_WORDS}"
    else:
        message = (f"the bytes are not an image in a supported format ({FORMATS_IN_WORDS}); "
                   f"{len(data):,} bytes starting {data[:8].hex(' ')}")
    return ImageDecodeError(DecodeFailure.UNDECODABLE, message, {"format_guessed": guessed})


PILLOW_IN_WORDS = {"Truncated File Read": "the file ends early (truncated)"}


def plain_words(error: Exception) -> str:
    text = re.sub(r"\s*<[^<>]*>", "", str(error)).strip() or type(error).__name__
    return PILLOW_IN_WORDS.get(text, text)[:200]


IMAGE_SIGNATURES = {  # magic bytes -> format, for messages about bytes the decoder refused
    b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP",
}
OTHER_KINDS = {
    b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive", b"\x1f\x8b": "gzip-compressed data",
    b"%!PS": "a PostScript/EPS file", b"8BPS": "a Photoshop document", b"\x00\x00\x01\x00": "an icon (ICO)",
}
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}


def guess_format(data: bytes) -> str:
    """The format the first bytes announce, or a description of what else they are."""
    for signature, kind in IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "AVIF" if brand in (b"avif", b"avis") else "HEIF" if brand in HEIF_BRANDS else "a video (MP4/QuickTime)"
    for signature, kind in OTHER_KINDS.items():
        if data.startswith(signature):
            return kind
    head = data[:256].lstrip()
    if head.startswith(b"<"):
        return "text (HTML, XML or SVG)"
    if head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return "plain text"
    return "unknown"


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
