"""Pixels -> model input: letterboxing and normalisation, stored in the bundle so serving matches training.

Torch-free, like decoding (`decode.py`): the trainer and the server call the same code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

from .decode import WHITE, DecodedImage, DecodeLimits, decode_image


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

    def photo_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of a `width` x `height` image inside the model input; the rest is the
        letterbox's white padding (ImageOps.pad's arithmetic). Training lights the photo, not the padding."""
        out_height, out_width = self.input_size
        if self.resize_mode == "stretch" or width * out_height == height * out_width:
            return 0, 0, out_height, out_width
        if width * out_height > height * out_width:  # wider than the input: padded above and below
            fitted = round(height / width * out_width)
            top = round((out_height - fitted) * 0.5)
            return top, 0, top + fitted, out_width
        fitted = round(width / height * out_height)
        left = round((out_width - fitted) * 0.5)
        return 0, left, out_height, left + fitted

    def from_bytes(self, data: bytes, limits: DecodeLimits | None = None) -> tuple[DecodedImage, np.ndarray]:
        """Image bytes -> (what was decoded, model input): the server's decode stage, at reduced JPEG scale."""
        decoded = decode_image(data, limits or DecodeLimits(), target=self.decode_target)
        return decoded, self(decoded.image)

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
