"""Batched geometric sampling for the embedded domains: affine warps of small images, crops of large ones."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def affine_warp(
    src: Tensor, size: int, angle_deg: np.ndarray, scale: np.ndarray, shift: np.ndarray, padding: str = "zeros"
) -> Tensor:
    """Place each image of `src` [N, C, h, w] into a `size` square: rotated by `angle_deg` (counter-clockwise
    as displayed), covering `scale` of the side, centred at `shift` [N, 2] (fractions of the half-side)."""
    a = np.deg2rad(angle_deg)
    cos, sin = np.cos(a), np.sin(a)
    # affine_grid maps output coords to input coords: in = R(-a) (out - t) / s.
    # y points down in grid coords, so R(-a) in image coordinates is a CCW rotation on screen.
    r = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2) / scale[:, None, None]
    t = -(r @ shift[:, :, None])
    theta = torch.from_numpy(np.concatenate([r, t], -1).astype(np.float32))
    grid = F.affine_grid(theta, [len(src), src.shape[1], size, size], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def random_crops(
    image: Tensor,
    n: int,
    size: int,
    rng: np.random.Generator,
    side: tuple[float, float],
    region: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """`n` square crops of `image` [C, H, W] resized to `size`, area-averaged (roi_align) so no aliasing.

    Crop sides are uniform in `side` (fractions of min(H, W)); crops lie inside the columns `region`
    (fractions of W), which lets train and val come from disjoint parts of a picture.
    """
    _, h, w = image.shape
    sides = rng.uniform(side[0], side[1], n) * min(h, w)
    x_lo, x_hi = region[0] * w, region[1] * w
    sides = np.minimum(sides, min(h, x_hi - x_lo))
    x0 = x_lo + rng.uniform(0, 1, n) * (x_hi - x_lo - sides)
    y0 = rng.uniform(0, 1, n) * (h - sides)
    boxes = np.stack([np.zeros(n), x0, y0, x0 + sides, y0 + sides], 1).astype(np.float32)
    # Imported here: importing torchvision takes ~3 s, which a sweep's driver (it only lists the domains) skips.
    from torchvision.ops import roi_align

    return roi_align(image[None], torch.from_numpy(boxes), output_size=size, sampling_ratio=-1, aligned=True)


def rot90_flip(x: Tensor, rng: np.random.Generator) -> Tensor:
    """Random multiple-of-90-degree rotation and mirror per image: the dihedral group leaves textures' classes alone."""
    k = rng.integers(0, 4, len(x))
    flip = rng.random(len(x)) < 0.5
    out = x.clone()
    for quarter in range(4):
        idx = torch.from_numpy(np.flatnonzero(k == quarter))
        if len(idx):
            out[idx] = torch.rot90(x[idx], quarter, dims=(2, 3))
    idx = torch.from_numpy(np.flatnonzero(flip))
    out[idx] = out[idx].flip(3)
    return out


def centred_grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in [-1, 1] of a `size` square: (x, y), each [size, size], y pointing down."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y

