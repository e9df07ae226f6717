"""Visual Decathlon (Rebuffi et al. 2017) read from the official devkit tree, as METHOD.md section 7 specifies.

Layout: `<root>/annotations/<domain>_{train,val}.json` (COCO-style) and the images at `<root>/<file_name>`,
where `file_name` starts with `data/`. We train on train and report val (test labels are not public).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from torchvision import transforms as T

from bap.config import DataConfig
from bap.data.checks import DirListing, check_known_domains, check_same_classes, require_dir, require_file
from bap.data.domain import DomainData
from bap.data.images import ImageListDataset, check_headers, sample_stats

logger = logging.getLogger(__name__)

# Domain -> number of classes in the official release (METHOD.md 7); also the order `list_domains` returns.
DOMAINS: dict[str, int] = {
    "imagenet12": 1000,
    "aircraft": 100,
    "cifar100": 100,
    "daimlerpedcls": 2,
    "dtd": 47,
    "gtsrb": 43,
    "vgg-flowers": 102,
    "omniglot": 1623,
    "svhn": 10,
    "ucf101": 101,
}
# Signs, characters and house numbers fill the frame and are not mirror-symmetric: keep the whole 72x72 image
# and never flip (Rebuffi et al.'s protocol).
FULL_FRAME = frozenset({"gtsrb", "omniglot", "svhn"})
RESIZE = 72
CROP = 64
SOURCE = "imagenet12"  # the domain Decathlon backbones are pretrained on
STATS_SAMPLE = 200  # train images per domain behind the mean/std estimate

_FIX_TREE = "point data.root at the Decathlon devkit root holding annotations/ and data/"


@dataclass
class _Split:
    samples: list[tuple[str, int]]
    classes: tuple[str, ...]  # label order
    category_ids: list[int]  # sorted ids, label i <-> category_ids[i]


def _load_json(path: str, domain: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot parse annotation file {path} of domain {domain!r}: {err}; re-extract the devkit") from err
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"annotation file {path} of domain {domain!r} lacks key(s) {missing}; expected COCO-style JSON")
    return data


def _read_split(root: str, domain: str, split: str, listing: DirListing) -> _Split:
    """Parse one split, joining annotations to images by `image_id` and labelling by sorted category id."""
    path = os.path.join(root, "annotations", f"{domain}_{split}.json")
    require_file(path, f"annotation file of domain {domain!r}", _FIX_TREE)
    data = _load_json(path, domain)
    try:
        return _join(root, domain, split, path, data, listing)
    except (KeyError, TypeError) as err:
        # A malformed entry (missing 'id', a null category...) would otherwise surface as a bare KeyError.
        raise ValueError(f"malformed entry in {path} (domain {domain!r}): {type(err).__name__}: {err}") from err


def _join(root: str, domain: str, split: str, path: str, data: dict, listing: DirListing) -> _Split:
    """Label each annotated image; ids are not positions, so everything is matched through dictionaries."""
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
    category_ids = sorted(names)
    label_of = {cid: i for i, cid in enumerate(category_ids)}

    files: dict[int, str] = {}
    for image in data["images"]:
        if int(image["id"]) in files:
            raise ValueError(f"{path}: image id {image['id']} appears twice in 'images' (domain {domain!r})")
        name = str(image["file_name"])
        # An annotation file is input: it may name images only inside the data root.
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise ValueError(f"{path}: file_name {name!r} (domain {domain!r}) leaves the data root; file names are "
                             "relative to the root and start with data/")
        files[int(image["id"])] = name

    category_of: dict[int, int] = {}
    for ann in data["annotations"]:
        image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
        if image_id not in files:
            raise ValueError(
                f"{path}: an annotation refers to image id {image_id}, which is not in 'images' (domain {domain!r}); "
                f"fix or re-extract the annotation file"
            )
        if category_id not in label_of:
            raise ValueError(
                f"{path}: image {files[image_id]} has category id {category_id}, not among 'categories' (domain {domain!r})"
            )
        if category_of.setdefault(image_id, category_id) != category_id:
            raise ValueError(f"{path}: image {files[image_id]} has two different categories (domain {domain!r})")

    samples: list[tuple[str, int]] = []
    unlabelled = 0
    for image_id, file_name in files.items():
        if image_id not in category_of:
            unlabelled += 1
            continue
        file_path = os.path.join(root, file_name)
        if not listing.exists(file_path):
            raise FileNotFoundError(
                f"image {file_path} of domain {domain!r} (listed in {path}) does not exist; {_FIX_TREE} "
                f"(file_name is relative to the root and starts with data/)"
            )
        target = listing.outside(file_path, root)
        if target is not None:
            raise ValueError(f"image {file_path} of domain {domain!r} (listed in {path}) is a link to {target}, outside "
                             "the data root; copy the image into the root, or link the folder that holds it")
        samples.append((file_path, label_of[category_of[image_id]]))
    if unlabelled:
        logger.warning("%s: %d image(s) without an annotation are skipped", path, unlabelled)

    present = {label for _, label in samples}
    empty = [names[category_ids[i]] for i in range(len(category_ids)) if i not in present]
    if empty:
        raise ValueError(
            f"domain {domain!r}: class(es) {', '.join(map(repr, empty[:10]))} have no images in the {split} split "
            f"({path}); every class needs images in train and val"
        )
    return _Split(samples, tuple(names[c] for c in category_ids), category_ids)


def _transforms(domain: str) -> tuple[list, list, int]:
    """Train and eval PIL transforms (without ToTensor/Normalize) and the resulting square input side."""
    if domain in FULL_FRAME:
        both = [T.Resize(RESIZE), T.CenterCrop(RESIZE)]
        return both, list(both), RESIZE
    train = [T.Resize(RESIZE), T.RandomCrop(CROP), T.RandomHorizontalFlip()]
    return train, [T.Resize(RESIZE), T.CenterCrop(CROP)], CROP


def prepare(cfg: DataConfig, domains: list[str]) -> dict[str, tuple[_Split, _Split]]:
    """Every up-front check for ``domains``; each domain's (train, val) splits for ``build``."""
    root = str(cfg.root)
    require_dir(root, "data.root", _FIX_TREE)
    require_dir(os.path.join(root, "annotations"), "Decathlon annotations directory", _FIX_TREE)
    check_known_domains("decathlon", domains, list(DOMAINS))
    listing = DirListing()
    splits = {}
    for domain in domains:
        train = _read_split(root, domain, "train", listing)
        val = _read_split(root, domain, "val", listing)
        train_ids = [f"{n} (id {i})" for n, i in zip(train.classes, train.category_ids)]
        val_ids = [f"{n} (id {i})" for n, i in zip(val.classes, val.category_ids)]
        check_same_classes(domain, train_ids, val_ids)
        if len(train.classes) != DOMAINS[domain]:
            logger.warning(
                "decathlon domain %s has %d classes on disk, the official release has %d",
                domain, len(train.classes), DOMAINS[domain],
            )
        splits[domain] = (train, val)
    # Headers last: cheap, but after every JSON is known to be sound.
    for domain, (train, val) in splits.items():
        check_headers([p for p, _ in train.samples], domain)
        check_headers([p for p, _ in val.samples], domain)
    return splits


def build(cfg: DataConfig, domain: str, splits: tuple[_Split, _Split]) -> DomainData:
    train, val = splits
    train_tf, eval_tf, side = _transforms(domain)
    # Mean/std from an evenly spaced sample of <= STATS_SAMPLE train images under the eval transform: cheap
    # (a few hundred decodes) and deterministic, and close to the full-split value for these 72px images.
    mean, std = sample_stats([p for p, _ in train.samples], T.Compose(eval_tf + [T.ToTensor()]), domain, STATS_SAMPLE)
    normalize = [T.ToTensor(), T.Normalize(mean.tolist(), std.tolist())]
    return DomainData(
        name=domain,
        num_classes=len(train.classes),
        input_size=(side, side),
        train=ImageListDataset(train.samples, T.Compose(train_tf + normalize), domain),
        val=ImageListDataset(val.samples, T.Compose(eval_tf + normalize), domain),
        classes=train.classes,
    )


def list_domains(cfg: DataConfig) -> list[str]:
    """All ten Decathlon domains (imagenet12 is a target too in the Decathlon score), in METHOD.md's order."""
    return list(DOMAINS)


def build_source(cfg: DataConfig) -> DomainData:
    """imagenet12, the Decathlon's designated pretraining domain, whatever `cfg.domains` says."""
    return build(cfg, SOURCE, prepare(cfg, [SOURCE])[SOURCE])
