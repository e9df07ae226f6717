"""Colour operations for the embedded domains, batched over [N, 3, H, W] float images in [0, 1].

Randomness comes from a numpy `Generator` so generation is a pure function of the seed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _t(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def contrasting_colors(
    rng: np.random.Generator, n: int, min_dist: float, lighter_fg: bool = False
) -> tuple[Tensor, Tensor]:
    """`n` (foreground, background) RGB pairs at least `min_dist` apart, so the object is visible in every image.

    With `lighter_fg` the pairs differ by at least `min_dist` in luminance and the foreground is the lighter
    one: the polarity then carries no information a model must learn to ignore (hue still varies freely).
    """
    fg = rng.uniform(0, 1, (n, 3))
    bg = rng.uniform(0, 1, (n, 3))

    def too_close() -> np.ndarray:
        if lighter_fg:
            return np.abs(luminance(fg) - luminance(bg)) < min_dist
        return np.linalg.norm(fg - bg, axis=1) < min_dist

    for _ in range(200):
        close = too_close()
        if not close.any():
            break
        fg[close] = rng.uniform(0, 1, (int(close.sum()), 3))
        bg[close] = rng.uniform(0, 1, (int(close.sum()), 3))
    if lighter_fg:
        swap = luminance(fg) < luminance(bg)
        fg[swap], bg[swap] = bg[swap].copy(), fg[swap].copy()
    return _t(fg), _t(bg)


def smooth_noise(rng: np.random.Generator, n: int, channels: int, size: int, grid: int = 4) -> Tensor:
    """Low-frequency noise in about [-1, 1]: a random `grid` x `grid` field upsampled bicubically."""
    coarse = _t(rng.uniform(-1, 1, (n, channels, grid, grid)))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def colorize(gray: Tensor, fg: Tensor, bg: Tensor) -> Tensor:
    """Map intensities [N, 1, H, W] in [0, 1] onto the line from `bg` (0) to `fg` (1) colours [N, 3]."""
    return bg[:, :, None, None] + (fg - bg)[:, :, None, None] * gray


def jitter(
    x: Tensor,
    rng: np.random.Generator,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    tint: float = 0.0,
    noise: float = 0.0,
) -> Tensor:
    """Per-image random brightness shift, contrast and saturation scale, channel gains and Gaussian noise."""
    n = len(x)
    if saturation:
        gray = x.mean(1, keepdim=True)
        x = gray + (x - gray) * _t(rng.uniform(1 - saturation, 1 + saturation, (n, 1, 1, 1)))
    if contrast:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = mean + (x - mean) * _t(rng.uniform(1 - contrast, 1 + contrast, (n, 1, 1, 1)))
    if brightness:
        x = x + _t(rng.uniform(-brightness, brightness, (n, 1, 1, 1)))
    if tint:
        x = x * _t(rng.uniform(1 - tint, 1 + tint, (n, 3, 1, 1)))
    if noise:
        x = x + noise * _t(rng.standard_normal(x.shape))
    return x.clamp(0, 1)


def to_uint8(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)
