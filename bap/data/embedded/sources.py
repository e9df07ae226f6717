"""Real pictures and glyphs that ship inside installed packages (scikit-image, scikit-learn, Pillow's font): no
download, same bytes on every machine. Each loader is cached; callers must treat the returned tensors as read-only."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Larger pictures are downscaled first: crops of a 1411-pixel retina would only cost time, not add detail at 32px.
MAX_SIDE = 512


def _as_float(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32)


@lru_cache(maxsize=None)
def picture(name: str) -> Tensor:
    """A scikit-image sample picture as RGB float [3, H, W] in [0, 1], longest side <= MAX_SIDE."""
    import skimage.data  # deferred: only the embedded domains need scikit-image

    if name == "binary_blobs":  # procedural, with a fixed rng so the picture never changes
        array = skimage.data.binary_blobs(length=MAX_SIDE, blob_size_fraction=0.06, rng=0)
    elif name == "stereo_motorcycle":
        array = skimage.data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage.data, name)()
    x = torch.from_numpy(_as_float(array))
    x = x[None] if x.ndim == 2 else x[..., :3].permute(2, 0, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    scale = MAX_SIDE / max(x.shape[1:])
    if scale < 1:
        x = F.interpolate(x[None], scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)[0]
    return x.contiguous().clamp(0, 1)


@lru_cache(maxsize=None)
def gray_texture(name: str) -> Tensor:
    """`picture(name)` as one standardised grey channel [1, H, W] (mean 0.5, std 0.2).

    Equal global statistics stop a classifier from telling textures apart by mean brightness alone.
    """
    gray = picture(name).mean(0, keepdim=True)
    return ((gray - gray.mean()) / gray.std().clamp_min(1e-6) * 0.2 + 0.5).clamp(0, 1)


@lru_cache(maxsize=None)
def digits() -> tuple[Tensor, np.ndarray]:
    """scikit-learn's 1797 handwritten digits: images [N, 8, 8] in [0, 1] and labels [N]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.from_numpy(bunch.images.astype(np.float32) / 16.0), bunch.target.astype(np.int64)


@lru_cache(maxsize=None)
def lfw_faces() -> tuple[Tensor, Tensor]:
    """scikit-image's LFW subset: 100 grey 25x25 faces and 100 non-face background patches, in [0, 1]."""
    import skimage.data

    images = torch.from_numpy(_as_float(skimage.data.lfw_subset()))
    return images[:100], images[100:]


@lru_cache(maxsize=None)
def letter_glyphs(letters: tuple[str, ...], side: int = 64) -> Tensor:
    """Each letter drawn centred in a `side` square with Pillow's bundled scalable font: [len, side, side] in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(side * 0.8))
    out = torch.empty(len(letters), side, side)
    for i, letter in enumerate(letters):
        image = Image.new("L", (side, side))
        ImageDraw.Draw(image).text((side / 2, side / 2), letter, font=font, fill=255, anchor="mm")
        out[i] = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    return out
