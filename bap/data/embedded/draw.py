"""How each embedded target domain draws its images from class labels.

Every `draw_*` maps labels [N] to float images [N, 3, size, size] in [0, 1], taking all randomness from `rng`
(one stream per domain and split) and `seed` (the train/val split of the source pictures). Nothing here is
cached; `embedded.generate` caches the results.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bap.data.embedded.geometric import affine_warp, centred_grid, random_crops, rot90_flip
from bap.data.embedded.photometric import colorize, contrasting_colors, jitter, smooth_noise
from bap.data.embedded.procedural import draw_shapes
from bap.data.embedded.sources import digits, gray_texture, letter_glyphs, lfw_faces, picture

TEXTURES = ("brick", "grass", "gravel", "moon", "page", "text", "hubble_deep_field", "binary_blobs")
SCENES = ("astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry", "stereo_motorcycle", "camera")
FACES = ("upright", "rotated_ccw", "upside_down", "rotated_cw", "non_face")
LETTERS = tuple("AEFGHKMPRT")
# Grating orientations in degrees: 30 degrees apart, a quarter of the +-15 degree tolerance never overlaps.
GRATINGS = ("0", "30", "60", "90", "120", "150")
# Fraction of a picture's width that textures' and scenes' train crops come from; val crops come from the rest.
TRAIN_COLUMNS = 0.7
_POOL_KEY = 2  # rng stream that splits digits/faces into train and val pools (0/1 are the splits' own streams)


def _split_pool(indices: np.ndarray, split: str, seed: int, key: int) -> np.ndarray:
    """Seeded 2/3 : 1/3 split of source images into train and val pools (disjoint, so val tests generalisation)."""
    perm = np.random.default_rng([seed, key, _POOL_KEY]).permutation(indices)
    n_val = max(1, len(perm) // 3)
    return perm[n_val:] if split == "train" else perm[:n_val]


def _choose(pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """`k` items of `pool`, without repeats until the pool is used up (then again, in a new order)."""
    reps = -(-k // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:k]


def draw_digits(labels: np.ndarray, split: str, size: int, rng: np.random.Generator, seed: int, key: int) -> Tensor:
    images, targets = digits()
    idx = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        pool = _split_pool(np.flatnonzero(targets == c), split, seed, key * 100 + int(c))
        idx[labels == c] = _choose(pool, int((labels == c).sum()), rng)
    n = len(labels)
    # Bicubic upsampling first turns the 8x8 blocks into smooth strokes before the warp resamples them.
    strokes = F.interpolate(images[idx][:, None], size=32, mode="bicubic", align_corners=False).clamp(0, 1)
    strokes = affine_warp(
        strokes, size, rng.uniform(-15, 15, n), rng.uniform(0.55, 0.85, n), rng.uniform(-0.15, 0.15, (n, 2))
    )
    fg, bg = contrasting_colors(rng, n, min_dist=0.3, lighter_fg=True)
    background = bg[:, :, None, None] + 0.15 * smooth_noise(rng, n, 3, size)
    images = background * (1 - strokes) + fg[:, :, None, None] * strokes
    return jitter(images, rng, brightness=0.1, contrast=0.2, noise=0.06)


def _columns(split: str) -> tuple[float, float]:
    """The part of a picture a split crops from: train and val never see the same pixels."""
    return (0.0, TRAIN_COLUMNS) if split == "train" else (TRAIN_COLUMNS, 1.0)


def draw_textures(labels: np.ndarray, split: str, size: int, rng: np.random.Generator, seed: int, key: int) -> Tensor:
    region = _columns(split)
    gray = torch.empty(len(labels), 1, size, size)
    for c in np.unique(labels):
        where = torch.from_numpy(np.flatnonzero(labels == c))
        gray[where] = random_crops(gray_texture(TEXTURES[c]), len(where), size, rng, side=(0.1, 0.25), region=region)
    gray = rot90_flip(gray, rng)
    fg, bg = contrasting_colors(rng, len(labels), min_dist=0.3, lighter_fg=True)
    return jitter(colorize(gray, fg, bg), rng, brightness=0.1, contrast=0.3, noise=0.03)


def draw_scenes(labels: np.ndarray, split: str, size: int, rng: np.random.Generator, seed: int, key: int) -> Tensor:
    images = torch.empty(len(labels), 3, size, size)
    for c in np.unique(labels):
        where = torch.from_numpy(np.flatnonzero(labels == c))
        images[where] = random_crops(picture(SCENES[c]), len(where), size, rng, side=(0.2, 0.3),
                                     region=_columns(split))
    flip = torch.from_numpy(np.flatnonzero(rng.random(len(labels)) < 0.5))
    images[flip] = images[flip].flip(3)
    return jitter(images, rng, brightness=0.15, contrast=0.3, saturation=0.4, tint=0.2, noise=0.03)


def draw_faces(labels: np.ndarray, split: str, size: int, rng: np.random.Generator, seed: int, key: int) -> Tensor:
    faces, non_faces = lfw_faces()
    n = len(labels)
    is_face = labels < 4
    src = torch.empty(n, 25, 25)
    face_pool = _split_pool(np.arange(len(faces)), split, seed, key * 100)
    other_pool = _split_pool(np.arange(len(non_faces)), split, seed, key * 100 + 1)
    src[torch.from_numpy(is_face)] = faces[_choose(face_pool, int(is_face.sum()), rng)]
    src[torch.from_numpy(~is_face)] = non_faces[_choose(other_pool, int((~is_face).sum()), rng)]
    # Mirroring a face before rotating keeps its orientation class; it only adds variety.
    mirror = torch.from_numpy(np.flatnonzero(rng.random(n) < 0.5))
    src[mirror] = src[mirror].flip(2)
    quarter = np.where(is_face, labels, rng.integers(0, 4, n))
    gray = affine_warp(
        src[:, None], size, quarter * 90 + rng.uniform(-12, 12, n), rng.uniform(1.0, 1.2, n),
        rng.uniform(-0.08, 0.08, (n, 2)), padding="reflection",
    ).clamp(0, 1)
    # Photo-like monochrome (dark-to-light with a faint random tint) rather than vivid random colours: keeps
    # faces' colour statistics apart from digits' and textures'.
    dark = rng.uniform(0.0, 0.3, (n, 1)) * rng.uniform(0.85, 1.15, (n, 3))
    light = rng.uniform(0.7, 1.0, (n, 1)) * rng.uniform(0.85, 1.15, (n, 3))
    images = colorize(gray, torch.from_numpy(light.astype(np.float32)), torch.from_numpy(dark.astype(np.float32)))
    return jitter(images, rng, brightness=0.1, contrast=0.2, noise=0.04)


def draw_letters(labels: np.ndarray, split: str, size: int, rng: np.random.Generator, seed: int, key: int) -> Tensor:
    """Capital letters (Pillow's own scalable font) at a random pose, dark on a light blotchy background of
    random hue, with a few thin distractor strokes: thin dark strokes, unlike digits' light ones."""
    n = len(labels)
    glyphs = letter_glyphs(LETTERS)
    ink = affine_warp(glyphs[labels][:, None], size, rng.uniform(-20, 20, n), rng.uniform(0.6, 0.9, n),
                      rng.uniform(-0.15, 0.15, (n, 2))).clamp(0, 1)
    fg, bg = contrasting_colors(rng, n, min_dist=0.35, lighter_fg=True)  # fg light: it is the background here
    paper = fg[:, :, None, None] + 0.1 * smooth_noise(rng, n, 3, size)
    images = paper * (1 - ink) + bg[:, :, None, None] * ink
    return jitter(images, rng, brightness=0.1, contrast=0.2, noise=0.05)


def draw_gratings(labels: np.ndarray, split: str, size: int, rng: np.random.Generator, seed: int, key: int) -> Tensor:
    """Sinusoidal gratings whose orientation is the class (+-10 degrees), at random frequency, phase and colours,
    under a smooth illumination field: oriented periodic texture, statistics no other domain has."""
    n = len(labels)
    x, y = centred_grid(size)
    angle = np.deg2rad(np.array([float(GRATINGS[c]) for c in labels]) + rng.uniform(-10, 10, n))
    freq = rng.uniform(2.0, 5.0, n) * np.pi  # 2-5 periods across the image
    phase = rng.uniform(0, 2 * np.pi, n)
    as_t = lambda a: torch.from_numpy(a.astype(np.float32))[:, None, None]  # noqa: E731
    wave = torch.sin(as_t(freq) * (x * as_t(np.cos(angle)) + y * as_t(np.sin(angle))) + as_t(phase))
    gray = (0.5 + 0.5 * wave)[:, None]
    fg, bg = contrasting_colors(rng, n, min_dist=0.3)
    images = colorize(gray, fg, bg) * (1 + 0.2 * smooth_noise(rng, n, 1, size, grid=2))
    return jitter(images, rng, brightness=0.1, contrast=0.2, noise=0.08)


def draw_source_shapes(
    labels: np.ndarray, split: str, size: int, rng: np.random.Generator, seed: int, key: int
) -> Tensor:
    return draw_shapes(labels, size, rng)
