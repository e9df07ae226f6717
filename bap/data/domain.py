"""`DomainData`: what the rest of `bap` sees of one domain, whatever data set it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset


@dataclass
class DomainData:
    """One domain's splits. Items of `train`/`val` are `(float32 tensor [3, H, W], int label)`, already normalised.

    `train` applies train-time augmentation and `val` does not, so the trainer never handles transforms.
    `input_size` is the (H, W) the model sees, which differs across Decathlon domains (64 vs 72).
    """

    name: str
    num_classes: int
    input_size: tuple[int, int]
    train: Dataset
    val: Dataset
    # Class names in label order (label i is classes[i]); extra to the core contract, for logs and reports.
    classes: tuple[str, ...] = field(default=())
