"""ImageNet-to-Sketch (Mallya et al.'s Piggyback benchmark): one torchvision-style ImageFolder per domain.

Layout: `<root>/<domain>/train/<class>/*` and `<root>/<domain>/test/<class>/*`; the `test` split is our val
(the benchmark has no separate validation split). Class counts are read from disk.

Unknown domain names are allowed when `<root>/<name>/train` exists, so a lab can add its own ImageFolder
domain (or point `build_source` at e.g. an `imagenet/` folder to pretrain on); a name that is neither known nor
on disk fails with the known names and the folders found.
"""

from __future__ import annotations

import logging
import os

from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from bap.config import DataConfig
from bap.data.checks import check_same_classes, require_dir
from bap.data.domain import DomainData
from bap.data.images import ImageListDataset, check_headers

logger = logging.getLogger(__name__)

# Domain -> classes in the published benchmark; also the order `list_domains` returns.
DOMAINS: dict[str, int] = {
    "cubs_cropped": 200,
    "stanford_cars_cropped": 196,
    "flowers": 102,
    "wikiart": 195,
    "sketches": 250,
}
SPLITS = ("train", "test")
INPUT = 224
# The benchmark fine-tunes an ImageNet-pretrained ResNet-50, whose first layers expect inputs normalised with
# ImageNet's statistics; per-domain statistics would shift every pretrained activation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _domains_on_disk(root: str) -> list[str]:
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "train")))


def _read_split(root: str, domain: str, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    directory = os.path.join(root, domain, split)
    require_dir(directory, f"{split} split of domain {domain!r}", f"create {directory}/<class>/<images>")
    try:
        classes, class_to_idx = find_classes(directory)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{directory} (domain {domain!r}) has no class folders; {err}") from err
    samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    present = {label for _, label in samples}
    empty = [c for c in classes if class_to_idx[c] not in present]
    if empty:
        raise ValueError(
            f"domain {domain!r}: class folder(s) {', '.join(os.path.join(directory, c) for c in empty[:10])} "
            f"hold no image ({'/'.join(IMG_EXTENSIONS)}); add images or delete the folder in both splits"
        )
    return samples, classes


def prepare(cfg: DataConfig, domains: list[str]) -> dict[str, tuple[list, list, list[str]]]:
    """Every up-front check for ``domains``; each domain's (train, test, classes) for ``build``."""
    root = str(cfg.root)
    require_dir(root, "data.root", "point data.root at the folder holding one <domain>/{train,test}/ per domain")
    missing = [d for d in domains if d not in DOMAINS and not os.path.isdir(os.path.join(root, d, "train"))]
    if missing:
        raise ValueError(
            f"data.domains has unknown imagenet_sketch domain(s) {', '.join(map(repr, missing))} with no "
            f"{root}/<domain>/train folder; known: {', '.join(DOMAINS)}; on disk: {', '.join(_domains_on_disk(root)) or 'none'}"
        )
    splits = {}
    for domain in domains:
        train, classes = _read_split(root, domain, "train")
        test, test_classes = _read_split(root, domain, "test")
        check_same_classes(domain, classes, test_classes, val_name="test")
        if domain in DOMAINS and len(classes) != DOMAINS[domain]:
            logger.warning("domain %s has %d classes on disk, the benchmark has %d", domain, len(classes), DOMAINS[domain])
        splits[domain] = (train, test, classes)
    for domain, (train, test, _) in splits.items():
        check_headers([p for p, _ in train], domain)
        check_headers([p for p, _ in test], domain)
    return splits


def transforms_for(domain: str) -> tuple[T.Compose, T.Compose]:
    """(train, test) transforms. The ``*_cropped`` domains are already cropped to their object, so Piggyback's
    protocol resizes them whole to 224x224 (a random crop would cut the object); the others take the usual
    RandomResizedCrop for training and Resize(256) + CenterCrop(224) for testing."""
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if domain.endswith("_cropped"):
        whole = T.Resize((INPUT, INPUT))
        return T.Compose([whole, T.RandomHorizontalFlip()] + normalize), T.Compose([whole] + normalize)
    train_tf = T.Compose([T.RandomResizedCrop(INPUT), T.RandomHorizontalFlip()] + normalize)
    return train_tf, T.Compose([T.Resize(256), T.CenterCrop(INPUT)] + normalize)


def build(cfg: DataConfig, domain: str, splits: tuple[list, list, list[str]]) -> DomainData:
    train, test, classes = splits
    train_tf, test_tf = transforms_for(domain)
    return DomainData(
        name=domain,
        num_classes=len(classes),
        input_size=(INPUT, INPUT),
        train=ImageListDataset(train, train_tf, domain),
        val=ImageListDataset(test, test_tf, domain),
        classes=tuple(classes),
    )


def list_domains(cfg: DataConfig) -> list[str]:
    """The five benchmark domains (static: extra folders under the root are used only when named)."""
    return list(DOMAINS)


def build_source(cfg: DataConfig) -> DomainData:
    """The first domain of `data.domains` (e.g. `[imagenet]`, an ImageFolder of the lab's pretraining data).

    The benchmark itself has no source domain on disk, so the caller must name one.
    """
    if not cfg.domains:
        raise ValueError(
            "imagenet_sketch has no built-in source domain; set data.domains=[<folder>] naming the "
            "ImageFolder domain under data.root to pretrain on"
        )
    domain = cfg.domains[0]
    return build(cfg, domain, prepare(cfg, [domain])[domain])
