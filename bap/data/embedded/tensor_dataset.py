"""In-memory image data set with cheap tensor augmentation, used by the embedded domains.

Images are kept as uint8 and normalised per item: 4x less memory than float and the normalisation is one
fused op. Augmentation draws from the *global* torch RNG so the trainer controls it by seeding/saving that
state alone (see `loaders.train_batches`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


def channel_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of uint8 (or [0, 1] float) images [N, 3, H, W], in [0, 1] units."""
    x = images.double() / 255.0 if images.dtype == torch.uint8 else images.double()
    mean = x.mean(dim=(0, 2, 3))
    # Guard a constant channel: dividing by ~0 would blow activations up rather than fail loudly.
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.float(), std.float()


def random_crop_flip(x: Tensor, pad: int, flip: bool) -> Tensor:
    """Random crop of a zero-padded image back to its size, then an optional horizontal flip (p=0.5).

    Zero padding happens after normalisation, so the border is the domain mean, not black.
    """
    _, h, w = x.shape
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = padded[:, top : top + h, left : left + w]
    if flip and torch.rand(()) < 0.5:
        x = x.flip(-1)
    return x.contiguous()


class TensorImageDataset(Dataset):
    """uint8 images [N, 3, H, W] + labels [N]; items are normalised float32 tensors and int labels."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Tensor,
        std: Tensor,
        *,
        augment: bool = False,
        pad: int = 0,
        flip: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W]; got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.mean = mean.view(3, 1, 1).float()
        self.std = std.view(3, 1, 1).float()
        self.augment = augment
        self.pad = pad
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = (self.images[index].float() / 255.0 - self.mean) / self.std
        if self.augment:
            x = random_crop_flip(x, self.pad, self.flip)
        return x, int(self.labels[index])
