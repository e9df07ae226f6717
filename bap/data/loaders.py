"""Domain-homogeneous batch iterators: a fixed number of training steps per call, and in-order evaluation.

Determinism contract: the *order* of samples depends only on `seed` (a private `torch.Generator`), and the
augmentation of each sample on the global torch RNG (main process, `num_workers=0`). The trainer therefore
seeds each call with e.g. hash(run_seed, epoch, domain_index) and needs to save only the global RNG state to
resume exactly. With workers, each worker's torch RNG is seeded from `seed` instead (DataLoader draws
`base_seed` from the generator we pass), so results are still a function of `seed`, but no longer of the
global RNG, and differ from the `num_workers=0` stream.
"""

from __future__ import annotations

import logging
import random
from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

# torch.Generator.manual_seed accepts 64-bit values; reduce any Python int (e.g. a hash) into range.
_SEED_MOD = 2**63


class RepeatingBatchSampler(Sampler[list[int]]):
    """Exactly `num_steps` batches of `batch_size` distinct indices from `range(n)`.

    Walks a fresh `torch.randperm` each time the data set runs out and drops each permutation's incomplete
    tail, so every batch is a full one and a small domain is simply revisited.
    """

    def __init__(self, n: int, batch_size: int, num_steps: int, seed: int) -> None:
        self.n, self.batch_size, self.num_steps, self.seed = n, batch_size, num_steps, seed

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed % _SEED_MOD)
        per_pass = self.n // self.batch_size
        emitted = 0
        while emitted < self.num_steps:
            order = torch.randperm(self.n, generator=generator).tolist()
            for b in range(min(per_pass, self.num_steps - emitted)):
                yield order[b * self.batch_size : (b + 1) * self.batch_size]
                emitted += 1


def _seed_worker(worker_id: int) -> None:
    # DataLoader already seeds the worker's torch RNG from our generator; align numpy/random for any
    # third-party transform that uses them.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def train_batches(
    dataset: Dataset, batch_size: int, num_steps: int, seed: int, num_workers: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield exactly `num_steps` training batches `(images, labels)` drawn from one domain's `dataset`.

    If `batch_size > len(dataset)` the batch size is clamped to `len(dataset)` (each batch is then the whole
    domain in a new order). We clamp rather than sample with replacement so a batch never holds the same image
    twice, which would bias BatchNorm statistics on tiny domains.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("train_batches got an empty data set; check the domain's train split")
    if batch_size <= 0 or num_steps < 0:
        raise ValueError(f"batch_size={batch_size} must be > 0 and num_steps={num_steps} must be >= 0")
    if batch_size > n:
        logger.warning("batch_size=%d exceeds the %d training images; clamping batches to %d", batch_size, n, n)
        batch_size = n
    sampler = RepeatingBatchSampler(n, batch_size, num_steps, seed)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        # A generator of our own keeps DataLoader from drawing its worker base seed off the global RNG.
        generator=torch.Generator().manual_seed((seed + 1) % _SEED_MOD),
        worker_init_fn=_seed_worker if num_workers > 0 else None,
    )
    return iter(loader)


def eval_batches(dataset: Dataset, batch_size: int, num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield `(images, labels)` batches in data set order, the last one possibly smaller.

    Touches no global RNG state, so evaluating mid-run does not change what training draws next.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be > 0")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )
    return iter(loader)
