"""Colour features of the product's pixels, in NumPy: one definition for training (torch tensors go in and come
back on their device) and for serving without torch.

baseColour is a property of pixels, not of shapes: a backbone trained on a few thousand images learns
silhouettes long before it learns fine colour distinctions (Navy Blue vs Black), while the product's own
pixels separate them directly. Studio shots sit on a near-white background, so the border tells the light's
colour and level; pixels that differ from it are the product. The features are a coarse joint histogram of the
foreground, white-balanced against that light (how its colours are spread), and its dominant colour at fine
resolution: the histogram's bins are too wide for neighbouring names (Beige and Nude sit 10 levels apart).
They are not learnt, so they need no gradient and no framework.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .bundle_config import HeadsConfig
    from .preprocess import Preprocessing


class ColourFeatures:
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], bins: int = 8, levels: int = 16,
                 resolution: int = 32, detail_resolution: int = 80) -> None:
        self.bins, self.levels, self.resolution, self.detail_resolution = bins, levels, resolution, detail_resolution
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)

    @property
    def num_features(self) -> int:
        histogram = self.bins ** 3 + 4  # joint histogram, foreground share, mean foreground colour
        return histogram + (3 * self.levels + 4 if self.levels else 0)  # + dominant colour, encoded and raw; share

    def __call__(self, pixel_values):
        """(B, 3, H, W) model input (NumPy, or a torch tensor: the answer comes back as one, on its device)
        -> (B, F) fp32."""
        if isinstance(pixel_values, np.ndarray):
            return self.features(pixel_values)
        return pixel_values.new_tensor(self.features(pixel_values.detach().float().cpu().numpy()))

    def features(self, pixel_values: np.ndarray) -> np.ndarray:
        rgb = np.clip(pixel_values.astype(np.float32) * self.std + self.mean, 0, 1)
        small = adaptive_mean(rgb, self.resolution)  # averages noise for the histogram
        light = background_light(small)  # (B, 3, h, w): the light falling on each pixel
        features = [self.histogram(small, light)]
        if self.levels:
            features.append(self.dominant_colour(rgb, light))
        return np.concatenate(features, axis=1).astype(np.float32)

    def histogram(self, rgb: np.ndarray, light: np.ndarray) -> np.ndarray:
        distance = distance_from_light(rgb, light)
        batch = len(rgb)
        foreground = np.clip((distance - 0.1) / 0.1, 0, 1).reshape(batch, -1)  # soft mask, (B, N)
        balanced = np.clip(rgb / light, 0, 1).reshape(batch, 3, -1)  # the product's colour under white light
        centres = np.linspace(0, 1, self.bins, dtype=np.float32)
        # Triangular (linear) bin weights: a colour between two bins counts for both, so small shifts of
        # light move mass smoothly instead of flipping bins.
        weights = np.clip(1 - np.abs(balanced[..., None, :] - centres[:, None]) * (self.bins - 1), 0, None)
        # The joint (r, g, b) histogram as one batched matmul: (r x g) pairs against foreground-weighted b.
        pixels = foreground.shape[1]
        red_green = (weights[:, 0, :, None] * weights[:, 1, None]).reshape(batch, self.bins ** 2, pixels)
        histogram = red_green @ (weights[:, 2] * foreground[:, None]).transpose(0, 2, 1)
        total = foreground.sum(axis=1, keepdims=True)
        histogram = histogram.reshape(batch, -1) / np.maximum(total, 1e-6)
        mean_colour = (balanced * foreground[:, None]).sum(axis=2) / np.maximum(total, 1e-6)
        share = total / pixels
        return np.concatenate([np.sqrt(histogram), share, mean_colour], axis=1)  # sqrt: Hellinger, for a linear head

    def dominant_colour(self, rgb: np.ndarray, light: np.ndarray) -> np.ndarray:
        """The weighted median colour of the product's flat interior, each channel encoded in `levels`
        triangular bins (so a linear head can draw a boundary anywhere along it), then raw, then the
        share of the frame it was taken from.

        Interior pixels are those that differ from none of their 4 neighbours by more than 4%: outlines,
        anti-aliased edges and print borders are mixtures of colours and drop out. The median, not the
        mean, so a print that covers a third of the product does not pull the answer towards its colour."""
        if max(rgb.shape[-2:]) > self.detail_resolution:
            rgb = adaptive_mean(rgb, self.detail_resolution)
        light = resize_bilinear(light, rgb.shape[-2:])
        balanced = np.clip(rgb / light, 0, 1.2)
        distance = distance_from_light(rgb, light)
        foreground = np.clip((distance - 0.03) / 0.03, 0, 1) * ~letterbox_padding(rgb)
        interior = np.clip(1 - roughness(balanced) / 0.04, 0, 1)
        # A tiny weight on every foreground pixel (and less on all others) so an image without a flat
        # interior still has a median; the share says how little it rests on.
        flat = foreground * interior
        batch = len(rgb)
        weights = (flat + 1e-6 * foreground + 1e-9).reshape(batch, -1)  # (B, N)
        median = weighted_median(balanced.reshape(batch, 3, -1) / 1.2, weights) * 1.2  # (B, 3)
        centres = np.linspace(0, 1, self.levels, dtype=np.float32)
        encoded = np.clip(1 - np.abs(median[..., None] - centres) * (self.levels - 1), 0, None).reshape(batch, -1)
        share = flat.reshape(batch, -1).mean(axis=1, keepdims=True)
        return np.concatenate([encoded, median, share], axis=1)


def adaptive_mean(image: np.ndarray, size: int) -> np.ndarray:
    """(B, C, H, W) -> (B, C, size, size): each output cell the mean of the input cells it covers, with the
    bounds adaptive average pooling uses (floor of the start, ceiling of the end), as two matrix products."""
    rows, columns = (pooling_matrix(length, size) for length in image.shape[2:])
    return (rows @ image.astype(np.float32) @ columns.T).astype(np.float32)


def pooling_matrix(length: int, size: int) -> np.ndarray:
    """(size, length): row i averages the input cells output cell i covers."""
    starts = (np.arange(size) * length) // size
    ends = -((-(np.arange(size) + 1) * length) // size)
    cells = np.arange(length)
    covered = (cells >= starts[:, None]) & (cells < ends[:, None])
    return (covered / (ends - starts)[:, None]).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, C, h, w) -> (B, C, *size), bilinear with the corners aligned."""
    out = image
    for axis, length in ((2, size[0]), (3, size[1])):
        current = out.shape[axis]
        if current == length:
            continue
        where = np.linspace(0, current - 1, length) if length > 1 else np.zeros(1)
        low = np.clip(np.floor(where).astype(int), 0, current - 1)
        high = np.clip(low + 1, 0, current - 1)
        shape = [1] * out.ndim
        shape[axis] = length
        fraction = (where - low).reshape(shape)
        out = (np.take(out, low, axis=axis) * (1 - fraction) + np.take(out, high, axis=axis) * fraction)
    return out.astype(np.float32)


def distance_from_light(rgb: np.ndarray, light: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) -> (B, H, W): how far each pixel is from the light falling on it, relative to that light
    (so dim corners are not "product"), in its most different channel."""
    return (np.abs(rgb - light) / light).max(axis=1)


def letterbox_padding(rgb: np.ndarray, axis: int = 1) -> np.ndarray:
    """True where every channel (along `axis`) is pure white: the letterbox's padding, which no light fell on."""
    return rgb.min(axis=axis) >= 0.999


def roughness(image: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) -> (B, H, W): each pixel's largest difference, in any channel, from its 4 neighbours."""
    across = np.abs(image[..., :, 1:] - image[..., :, :-1]).max(axis=1)  # (B, H, W-1): pixel vs right
    down = np.abs(image[..., 1:, :] - image[..., :-1, :]).max(axis=1)  # (B, H-1, W): pixel vs below
    rough = np.zeros_like(image[:, 0])
    rough[..., :, 1:] = across
    rough[..., :, :-1] = np.maximum(rough[..., :, :-1], across)
    rough[..., 1:, :] = np.maximum(rough[..., 1:, :], down)
    rough[..., :-1, :] = np.maximum(rough[..., :-1, :], down)
    return rough


def weighted_median(values: np.ndarray, weights: np.ndarray, steps: int = 512) -> np.ndarray:
    """Per channel of `values` (B, C, N) in [0, 1], the weighted median to 1/`steps`, by a weighted histogram:
    linear in N, where sorting is not."""
    batch, channels, _ = values.shape
    index = np.clip(np.round(values * (steps - 1)).astype(np.int64), 0, steps - 1)
    offsets = (np.arange(batch * channels) * steps).reshape(batch, channels, 1)
    mass = np.bincount((index + offsets).ravel(), weights=np.broadcast_to(weights[:, None], values.shape).ravel(),
                       minlength=batch * channels * steps).reshape(batch, channels, steps)
    cumulative = np.cumsum(mass.astype(np.float32), axis=2)
    below = np.minimum((cumulative < cumulative[..., -1:] / 2).sum(axis=2), steps - 1)
    return (below / (steps - 1)).astype(np.float32)


def background_light(rgb: np.ndarray, ring: int = 6) -> np.ndarray:
    """A plane a + b*x + c*y per channel fitted to the frame's outer ring: studio light falls off smoothly across
    the frame. Pure white (the letterbox padding, which no light fell on) is left out, and the fit is repeated
    without the 40% of lit ring pixels that fit worst (the product reaching into the ring)."""
    batch, _, height, width = rgb.shape
    ys, xs = np.meshgrid(np.linspace(-1, 1, height, dtype=np.float32), np.linspace(-1, 1, width, dtype=np.float32),
                         indexing="ij")
    on_ring = np.zeros((height, width), bool)
    on_ring[:ring], on_ring[-ring:], on_ring[:, :ring], on_ring[:, -ring:] = True, True, True, True
    design = np.stack([np.ones_like(xs), xs, ys], axis=-1)  # (h, w, 3)
    a = design[on_ring]  # (R, 3)
    values = rgb.transpose(0, 2, 3, 1)[:, on_ring]  # (B, R, 3)
    lit = (~letterbox_padding(values, axis=2)).astype(np.float32)  # (B, R)
    weights = lit
    for _ in range(2):
        aw = a[None] * weights[..., None]  # (B, R, 3)
        normal = aw.transpose(0, 2, 1) @ a[None] + 1e-3 * np.eye(3, dtype=np.float32)
        coefficients = np.linalg.solve(normal, aw.transpose(0, 2, 1) @ values).astype(np.float32)  # (B, 3, 3)
        residual = np.abs(a[None] @ coefficients - values).max(axis=2)  # (B, R)
        masked = np.where(lit == 0, np.nan, residual)
        with warnings.catch_warnings():  # a frame with no lit ring pixel has no quantile: white light below
            warnings.simplefilter("ignore", RuntimeWarning)
            cut = np.nanquantile(masked, 0.6, axis=1, keepdims=True)
        weights = lit * (residual <= np.nan_to_num(cut, nan=np.inf)).astype(np.float32)
    light = (design.reshape(1, -1, 3) @ coefficients).reshape(batch, height, width, 3).transpose(0, 3, 1, 2)
    # No usable ring (a product filling the frame, or all padding): assume white light.
    usable = (weights.sum(axis=1) >= 8).reshape(batch, 1, 1, 1)
    return np.clip(np.where(usable, light, np.ones_like(light)), 0.2, 1.2).astype(np.float32)



def colour_features(heads: HeadsConfig, preprocessing: Preprocessing) -> ColourFeatures | None:
    """The colour features a bundle's heads read, or None when they read none."""
    if not heads.colour_bins:
        return None
    return ColourFeatures(preprocessing.mean, preprocessing.std, heads.colour_bins, heads.colour_levels)
