"""One encoder pass: the backbone and the colour features of the same pixels, composed in one place.

Every path from pixels to features goes through `encode`: the trainer's (torch tensors, eager backbone) and
every serving backend's (the backbone graph on torch or OpenVINO, the colour features in NumPy or torch).
It is array-agnostic and imports neither torch nor NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Encoded:
    """One batch's encoder pass, in the arrays of whoever ran it (a torch tensor stays on its device)."""

    pooled: Any  # (B, C): for the heads and the embedding
    tokens: Any  # (B, h*w, C): for the caption decoder
    colour: Any | None  # (B, F): colour features of the same pixels, when the model has them


def encode(backbone: Callable[[Any], tuple[Any, Any]], colour: Callable[[Any], Any] | None, pixels: Any) -> Encoded:
    """One backbone pass (`backbone` returns pooled features and tokens) and the colour features of the same
    pixels."""
    pooled, tokens = backbone(pixels)
    return Encoded(pooled, tokens, colour(pixels) if colour is not None else None)
