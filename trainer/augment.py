"""Label-preserving augmentation: the same product, photographed differently.

Product photos differ in framing (scale, position, a slight tilt), light (exposure, an uneven fall-off
across the frame), focus and sensor noise; none of that changes what the product is, its colour or
who it is for. Hue and saturation are never touched: baseColour is a label. Everything runs on the
preprocessed tensor, so the server's decode and letterbox stay the only path from bytes to pixels.

The server letterboxes a photo *after* it was taken: the light and the sensor noise fell on the photo,
never on the white padding around it, and re-framing happened inside the photo's own edges. Lighting
the padding too never shows the model the grey photo inside a white frame that an unevenly lit upload
becomes, and such uploads then lose accuracy (the README has the figures). The photo's place in the input
comes from the letterbox geometry (Preprocessing.photo_box), not from the pixels: real product shots often
have pure-white backgrounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional

PhotoBox = tuple[int, int, int, int]  # (top, left, bottom, right) in model-input pixels


@dataclass(frozen=True)
class Augment:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: float = 0.5  # product shots face either way
    scale: tuple[float, float] = (0.75, 1.05)  # of the product in the frame; > 1 crops a little
    shift: float = 0.1  # of the frame, each way
    rotate: float = 8.0  # degrees, each way
    light_gradient: float = 0.2  # brightness fall-off across the frame, at most
    exposure: tuple[float, float] = (0.92, 1.04)
    blur: float = 0.3  # probability of a slight defocus
    noise: float = 0.03  # sensor noise sigma at most, in [0, 1] units

    def __call__(self, pixels: torch.Tensor, box: PhotoBox | None = None) -> torch.Tensor:
        """(3, H, W) normalised model input -> an augmented copy, normalised the same way. `box`: where the
        photo lies inside the letterbox padding (Preprocessing.photo_box); None = the whole frame."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        image = pixels * std + mean  # [0, 1]
        photo = photo_mask(box, image.shape[-2:]) if box else torch.ones(1, *image.shape[-2:], dtype=torch.bool)
        if torch.rand(()) < self.flip:
            image, photo = image.flip(-1), photo.flip(-1)
        # The photographer re-frames inside the photo: what moves past its edge is cut, and the letterbox
        # padding around it stays white.
        image = torch.where(photo, self._reframe(image), torch.ones_like(image))
        image = torch.where(photo, self._relight(image), image)
        if torch.rand(()) < self.blur:
            image = torch.where(photo, _gaussian_blur(image, _uniform(0.3, 0.8)), image)
        image = torch.where(photo, image + torch.randn_like(image) * _uniform(0.0, self.noise), image)
        return (image.clamp(0, 1) - mean) / std

    def _reframe(self, image: torch.Tensor) -> torch.Tensor:
        scale = _uniform(*self.scale)
        angle = math.radians(_uniform(-self.rotate, self.rotate))
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[cos, -sin, _uniform(-self.shift, self.shift) * 2],
                              [sin, cos, _uniform(-self.shift, self.shift) * 2]], dtype=image.dtype)
        grid = functional.affine_grid(theta[None], [1, *image.shape], align_corners=False)
        # Sample (image - 1) with zero padding: what comes into view is white, like the studio background.
        moved = functional.grid_sample((image - 1)[None], grid, mode="bilinear", padding_mode="zeros",
                                       align_corners=False)
        return moved[0] + 1

    def _relight(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        direction = _uniform(0, 2 * math.pi)
        ys = torch.linspace(-1, 1, height).view(height, 1)
        xs = torch.linspace(-1, 1, width).view(1, width)
        ramp = (math.cos(direction) * xs + math.sin(direction) * ys) / 2  # in [-0.7, 0.7]
        gain = _uniform(*self.exposure) * (1 + _uniform(0, self.light_gradient) * ramp)
        return image * gain


def photo_mask(box: PhotoBox, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) True inside `box` (top, left, bottom, right)."""
    top, left, bottom, right = box
    mask = torch.zeros(1, *size, dtype=torch.bool)
    mask[:, top:bottom, left:right] = True
    return mask


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    offsets = torch.arange(-2, 3, dtype=image.dtype)
    kernel = torch.exp(-(offsets ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = functional.pad(image[None], (2, 2, 2, 2), mode="replicate")
    horizontal = functional.conv2d(padded, kernel.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
    return functional.conv2d(horizontal, kernel.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)[0]
