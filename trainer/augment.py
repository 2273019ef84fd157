"""Label-preserving augmentation: the same product, photographed differently.

Product photos differ in framing (scale, position, a slight tilt), light (exposure, an uneven fall-off
across the frame), focus and sensor noise; none of that changes what the product is, its colour or
who it is for. Hue and saturation are never touched: baseColour is a label. Everything runs on the
preprocessed tensor, so the server's decode and letterbox stay the only path from bytes to pixels.

The server letterboxes a photo *after* it was taken: the light and the sensor noise fell on the photo,
never on the white padding around it. Lighting the padding too teaches nothing about the grey photo
inside a white frame that an unevenly lit upload becomes: uneven light alone (no re-framing, noise, blur
or JPEG) cost a model trained so 0.05 of articleType and 0.085 of gender accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional


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

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, H, W) normalised model input -> an augmented copy, normalised the same way."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        image = pixels * std + mean  # [0, 1]
        if torch.rand(()) < self.flip:
            image = image.flip(-1)
        photo = photo_area(image)
        image = self._reframe(image)
        image = torch.where(photo, self._relight(image), image)
        if torch.rand(()) < self.blur:
            image = _gaussian_blur(image, _uniform(0.3, 0.8))
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


def photo_area(image: torch.Tensor) -> torch.Tensor:
    """(1, H, W) mask of the photo inside the letterbox of a (3, H, W) image in [0, 1]: Preprocessing pads
    with exact white, so whole rows and columns of it along the edges are padding. A photo whose own
    margins are exact white loses them to the padding, which only spares them the light."""
    _, height, width = image.shape
    white = (image >= 1 - 1e-4).all(dim=0)
    rows, columns = (~white.all(dim=1)).nonzero(), (~white.all(dim=0)).nonzero()
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    if len(rows) and len(columns):
        mask[:, rows.min():rows.max() + 1, columns.min():columns.max() + 1] = True
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
