"""Procedurally drawn shapes on noisy coloured backgrounds: the embedded source domain `shapes`.

Each class is an implicit region in shape coordinates (u, v), which a random rotation, scale and position map
to the image; masks are supersampled and averaged so edges are anti-aliased. Pretraining on these gives a
backbone edge, corner, colour and texture detectors without any download.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bap.data.embedded.geometric import centred_grid
from bap.data.embedded.photometric import contrasting_colors, jitter, smooth_noise

_SQRT3 = math.sqrt(3.0)


def _polar(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sqrt(u * u + v * v), torch.atan2(v, u)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    u, v = u / 1.15, v / 1.15  # enlarge: a circumradius-1 triangle looks small next to the others
    return (v > -0.5) & (v < 1 - _SQRT3 * u) & (v < 1 + _SQRT3 * u)


# Class name -> region test on shape coordinates (unit scale ~ circumradius 1). Shapes that differ only by a
# rotation (e.g. square vs diamond) would be indistinguishable under random rotation, so none are.
SHAPES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": lambda u, v: _polar(u, v)[0] < 1,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) < 0.85,
    "triangle": _triangle,
    "cross": lambda u, v: ((u.abs() < 0.3) & (v.abs() < 0.95)) | ((v.abs() < 0.3) & (u.abs() < 0.95)),
    "ring": lambda u, v: (_polar(u, v)[0] < 1) & (_polar(u, v)[0] > 0.55),
    "stripes": lambda u, v: (torch.maximum(u.abs(), v.abs()) < 0.85) & (torch.sin(u * 3 * math.pi) > 0),
    "star": lambda u, v: _polar(u, v)[0] < 0.4 + 0.6 * ((torch.cos(5 * _polar(u, v)[1]) + 1) / 2) ** 1.5,
    "ellipse": lambda u, v: u * u + (v / 0.5) ** 2 < 1,
    "crescent": lambda u, v: (_polar(u, v)[0] < 1) & ((u - 0.5) ** 2 + v * v > 0.8**2),
    "hexagon": lambda u, v: torch.maximum(v.abs(), u.abs() * _SQRT3 / 2 + v.abs() / 2) < 0.9,
}


def shape_masks(labels: np.ndarray, size: int, rng: np.random.Generator) -> Tensor:
    """Anti-aliased masks [N, 1, size, size] in [0, 1] of shape class `labels[i]` at a random pose."""
    n = len(labels)
    ss = max(2, 96 // size)  # ~96 supersampled pixels a side: smooth edges at a bounded cost
    x, y = centred_grid(size * ss)
    radius = rng.uniform(0.35, 0.7, n)
    # Keep most of the shape inside the frame so the class stays visible.
    cx = rng.uniform(-1, 1, n) * (1 - 0.9 * radius)
    cy = rng.uniform(-1, 1, n) * (1 - 0.9 * radius)
    angle = rng.uniform(0, 2 * math.pi, n)
    masks = torch.empty(n, 1, size, size)
    names = list(SHAPES)
    for label in np.unique(labels):
        i = np.flatnonzero(labels == label)
        as_t = lambda a: torch.from_numpy(a[i].astype(np.float32))[:, None, None]  # noqa: E731
        dx, dy = x[None] - as_t(cx), y[None] - as_t(cy)
        cos, sin, r = as_t(np.cos(angle)), as_t(np.sin(angle)), as_t(radius)
        inside = SHAPES[names[label]]((cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r)
        masks[torch.from_numpy(i)] = F.avg_pool2d(inside.float()[:, None], ss)
    return masks


def draw_shapes(labels: np.ndarray, size: int, rng: np.random.Generator) -> Tensor:
    """Images [N, 3, size, size] in [0, 1]: a shaded shape in one colour over a blotchy background of another."""
    n = len(labels)
    masks = shape_masks(labels, size, rng)
    fg, bg = contrasting_colors(rng, n, min_dist=0.5)
    # Blotches well below the fg/bg colour distance, so the outline stays the strongest edge in the image.
    background = bg[:, :, None, None] + 0.12 * smooth_noise(rng, n, 3, size, grid=int(rng.integers(3, 7)))
    foreground = fg[:, :, None, None] * (1 + 0.15 * smooth_noise(rng, n, 1, size, grid=3))
    images = background * (1 - masks) + foreground * masks
    return jitter(images, rng, brightness=0.1, contrast=0.2, noise=0.04)
