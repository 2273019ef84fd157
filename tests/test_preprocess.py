"""Decoding: formats, orientation, transparency, limits, and clear errors for bad bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from enrich_model.decode import DecodeFailure, DecodeLimits, ImageDecodeError, decode_image
from enrich_model.preprocess import Preprocessing


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    decoded = decode_image(encode(image, "JPEG", exif=exif))
    assert decoded.image.size == (20, 40) and (decoded.width, decoded.height) == (40, 20)


def test_transparency_becomes_white_background():
    decoded = decode_image(encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"))
    assert decoded.image.mode == "RGB" and decoded.image.getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_png_is_scaled_not_clipped():
    image = Image.fromarray(np.full((6, 6), 65535 // 2, dtype=np.uint16))
    value = decode_image(encode(image, "PNG")).image.getpixel((0, 0))
    assert 120 <= value[0] <= 135


def test_heic_when_the_encoder_is_available():
    pillow_heif = pytest.importorskip("pillow_heif")
    buffer = io.BytesIO()
    try:
        pillow_heif.from_pillow(Image.new("RGB", (64, 48), (0, 128, 0))).save(buffer, quality=90)
    except Exception as error:  # wheel built without an HEVC encoder
        pytest.skip(f"no HEIF encoder: {error}")
    decoded = decode_image(buffer.getvalue())
    assert decoded.format == "HEIF" and decoded.image.size == (64, 48)


@pytest.mark.parametrize(("data", "reason", "words"), [
    (b"", DecodeFailure.EMPTY, "empty image: the request carried no bytes"),
    (b"hello", DecodeFailure.UNDECODABLE, "the bytes are plain text, not a format this service reads"),
    (b"\xff\xd8\xff\xe0 truncated jpeg", DecodeFailure.UNDECODABLE, "look like a JPEG image but cannot be decoded"),
    (b"\x00" * 1000, DecodeFailure.UNDECODABLE, "not an image in a supported format"),
])
def test_bad_bytes_raise_a_reason(data: bytes, reason: DecodeFailure, words: str):
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(data)
    assert raised.value.reason is reason
    assert words in raised.value.message and "Error(" not in raised.value.message  # words, never a repr


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageDecodeError, match="over the limit") as raised:
        decode_image(encode(Image.new("RGB", (300, 300)), "PNG"), DecodeLimits(max_pixels=300 * 299))
    assert raised.value.reason == DecodeFailure.TOO_LARGE
    assert raised.value.details == {"limit": "max_image_pixels", "limit_value": str(300 * 299), "seen": str(300 * 300)}


def test_letterbox_keeps_the_whole_product():
    preprocessing = Preprocessing((32, 32), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    array = preprocessing(Image.new("RGB", (20, 40), (0, 0, 0)))
    assert array.shape == (3, 32, 32) and array.dtype == np.float32
    assert array[:, 16, 0].min() == pytest.approx(1.0)  # padded side is white
    assert array[:, 16, 16].max() == pytest.approx(0.0)  # product kept in the middle


def test_large_jpeg_decodes_at_reduced_scale_for_a_small_model_input():
    data = encode(Image.new("RGB", (2000, 1600), (30, 60, 90)), "JPEG")
    decoded = decode_image(data, target=64)
    assert (decoded.width, decoded.height) == (2000, 1600)  # the original's size is reported
    assert min(decoded.image.size) >= 128 and max(decoded.image.size) <= 500  # DCT-scaled, still >= 2x target
    assert decode_image(data).image.size == (2000, 1600)
