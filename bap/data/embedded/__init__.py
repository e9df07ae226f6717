"""The embedded multi-domain data set: generated in-process from pictures shipped with scikit-image/-learn.

No download and deterministic for `data.seed`: every domain and split draws from its own
`numpy.random.default_rng([seed, domain_key, split])`, so asking for a subset of domains, or in another order,
yields the same images. Domains (METHOD.md 7 asks for a source and targets of clearly different statistics):

- `shapes` (source, 10 classes): procedural shapes at random pose and colour on blotchy backgrounds.
- `digits` (10): scikit-learn's 8x8 handwritten digits, upscaled, randomly warped, light strokes on a darker
  background of random hues.
- `textures` (8): grey-level texture patches (brick, grass, gravel, moon, page, handwriting, deep field, blobs)
  at random scale and dihedral pose, mapped onto random dark-to-light colour pairs; train and val crop
  disjoint parts of each picture.
- `scenes` (8): colour patches of eight photographs (class = photograph) under colour jitter; train and val crop
  disjoint parts of each photograph.
- `faces` (5): LFW-subset faces upright / rotated 90 ccw / upside down / rotated 90 cw, and non-faces, in
  faintly tinted monochrome; train and val use disjoint faces.
- `letters` (10): capital letters in Pillow's bundled font at a random pose, thin dark ink on light paper.
- `gratings` (6): sinusoidal gratings whose orientation (0-150 degrees, +-10) is the class.

Classes are balanced; digits and faces split their source images so val never shows a train digit/face, and the
procedural domains (letters, gratings) draw every image afresh. With six targets, independent random masks at
budget 0.5 need 1 - 0.5^6 = 98% of the channels, so what sharing saves is measurable.
Colours are drawn per image, independently of the class, so mean colour gives little away (scenes excepted:
a photograph's palette is part of what identifies it). Drawing code lives in `draw.py`.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from bap.config import DataConfig
from bap.data.checks import check_known_domains
from bap.data.domain import DomainData
from bap.data.embedded.draw import (
    FACES,
    GRATINGS,
    LETTERS,
    SCENES,
    TEXTURES,
    draw_digits,
    draw_faces,
    draw_gratings,
    draw_letters,
    draw_scenes,
    draw_source_shapes,
    draw_textures,
)
from bap.data.embedded.photometric import to_uint8
from bap.data.embedded.procedural import SHAPES
from bap.data.embedded.tensor_dataset import TensorImageDataset, channel_stats

logger = logging.getLogger(__name__)

_SPLIT_KEY = {"train": 0, "val": 1}  # rng stream of each split


@dataclass(frozen=True)
class EmbeddedDomain:
    key: int  # fixed rng stream id: adding a domain never changes the others' images
    classes: tuple[str, ...]
    draw: Callable[..., Tensor]
    flip: bool  # whether a horizontal flip keeps the class (train-time augmentation)


SOURCE = "shapes"
DOMAINS: dict[str, EmbeddedDomain] = {
    "shapes": EmbeddedDomain(0, tuple(SHAPES), draw_source_shapes, flip=True),
    "digits": EmbeddedDomain(1, tuple(str(d) for d in range(10)), draw_digits, flip=False),
    "textures": EmbeddedDomain(2, TEXTURES, draw_textures, flip=True),
    "scenes": EmbeddedDomain(3, SCENES, draw_scenes, flip=True),
    # A flip turns "rotated_ccw" into "rotated_cw", so never flip faces.
    "faces": EmbeddedDomain(4, FACES, draw_faces, flip=False),
    # A mirrored letter or grating may be another class (or no letter): never flip them.
    "letters": EmbeddedDomain(5, LETTERS, draw_letters, flip=False),
    "gratings": EmbeddedDomain(6, GRATINGS, draw_gratings, flip=False),
}
TARGETS = tuple(name for name in DOMAINS if name != SOURCE)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Generation is many small tensor ops: intra-op threads only add synchronisation, which on a busy machine
    (parallel trials) made it ~10x slower (measured 6 s vs 0.6 s for all five domains on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=32)
def generate(name: str, size: int, train_per_class: int, val_per_class: int, seed: int) -> tuple[Tensor, ...]:
    """uint8 images and labels `(train_x, train_y, val_x, val_y)` of one domain; cached, treat as read-only."""
    start = time.perf_counter()
    spec = DOMAINS[name]
    seed = int(seed) % 2**63  # numpy seeds must be non-negative
    out: list[Tensor] = []
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        rng = np.random.default_rng([seed, spec.key, _SPLIT_KEY[split]])
        labels = np.repeat(np.arange(len(spec.classes)), per_class)
        with torch.no_grad(), _single_thread():
            images = spec.draw(labels, split, size, rng, seed, spec.key)
        order = rng.permutation(len(labels))  # mix classes so a prefix of the split is a fair sample
        out += [to_uint8(images[torch.from_numpy(order)]), torch.from_numpy(labels[order])]
    logger.debug("embedded domain %s generated in %.2fs", name, time.perf_counter() - start)
    return tuple(out)


def build(cfg: DataConfig, name: str, train_per_class: int) -> DomainData:
    spec = DOMAINS[name]
    size = cfg.image_size
    train_x, train_y, val_x, val_y = generate(name, size, train_per_class, cfg.val_per_class, cfg.seed)
    mean, std = channel_stats(train_x)  # per-domain statistics from the train split only
    return DomainData(
        name=name,
        num_classes=len(spec.classes),
        input_size=(size, size),
        train=TensorImageDataset(train_x, train_y, mean, std, augment=True, pad=max(1, size // 8), flip=spec.flip),
        val=TensorImageDataset(val_x, val_y, mean, std),
        classes=spec.classes,
    )


def list_domains(cfg: DataConfig) -> list[str]:
    """The target domains; `shapes` is the source and only appears when named in `data.domains`."""
    return list(TARGETS)


def prepare(cfg: DataConfig, domains: list[str]) -> dict[str, int]:
    """The one up-front check (known names); each domain's training images per class for ``build``."""
    check_known_domains("embedded", domains, list(DOMAINS))
    return {name: cfg.train_per_class for name in domains}


def build_source(cfg: DataConfig) -> DomainData:
    # More source images than target ones: the backbone is only as general as its pretraining.
    return build(cfg, SOURCE, cfg.source_train_per_class)
