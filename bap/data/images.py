"""Images on disk: a PIL-backed data set whose load errors name file and domain, header checks, and statistics."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

# Opening every header of a 1.2M-image domain up front would take minutes; above this many files per split we
# check an evenly spaced sample and rely on the load-time error for the rest.
HEADER_CHECK_LIMIT = 2000


def _read_error(path: str, domain: str, err: Exception) -> ValueError:
    return ValueError(
        f"cannot read image {path} of domain {domain!r} ({type(err).__name__}: {err}); "
        f"replace or delete the file (and its annotation/folder entry)"
    )


def load_rgb(path: str, domain: str) -> Image.Image:
    """Decode `path` as RGB; any decoding failure becomes a ValueError naming the file and domain."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise _read_error(path, domain, err) from err


def evenly_spaced(n: int, k: int) -> list[int]:
    """`min(n, k)` deterministic indices spread over `range(n)` (no RNG, so every run picks the same files)."""
    if n <= k:
        return list(range(n))
    return np.linspace(0, n - 1, k).round().astype(int).tolist()


def check_headers(paths: Sequence[str], domain: str, limit: int = HEADER_CHECK_LIMIT) -> None:
    """Open (without decoding) all `paths`, or an evenly spaced `limit` of them, so junk files fail before training."""
    for i in evenly_spaced(len(paths), limit):
        try:
            with Image.open(paths[i]):
                pass
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise _read_error(paths[i], domain, err) from err


class ImageListDataset(Dataset):
    """`(path, label)` samples read with PIL, converted to RGB, then passed through `transform`."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, domain: str) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.domain = domain

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return self.transform(load_rgb(path, self.domain)), label


def sample_stats(paths: Sequence[str], transform: Callable, domain: str, limit: int = 200) -> tuple[Tensor, Tensor]:
    """Per-channel mean/std over the pixels of an evenly spaced sample of <= `limit` images.

    `transform` should be the deterministic evaluation transform without normalisation (PIL -> [0, 1] tensor),
    so the statistics match what the model sees and do not depend on augmentation randomness.
    """
    if not paths:
        raise ValueError(f"domain {domain!r} has no training images to compute mean/std from")
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for i in evenly_spaced(len(paths), limit):
        x = transform(load_rgb(paths[i], domain)).double()
        total += x.sum(dim=(1, 2))
        total_sq += (x * x).sum(dim=(1, 2))
        count += x.shape[1] * x.shape[2]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    logger.debug("domain %s: mean %s std %s from %d images", domain, mean.tolist(), std.tolist(), min(len(paths), limit))
    return mean.float(), std.float()
