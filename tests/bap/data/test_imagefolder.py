"""ImageNet-to-Sketch ImageFolder reader on tiny generated trees (bap/data/imagefolder.py)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from bap.config import DataConfig
from bap.data import build_domains, build_source, list_domains
from bap.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, transforms_for

COLOURS = {"ant": (200, 30, 30), "bee": (30, 200, 40), "cat": (40, 60, 220)}


def make_tree(root, domain="flowers", classes=("ant", "bee", "cat"), per_class=(3, 2)):
    for split, n in zip(("train", "test"), per_class):
        for c in classes:
            folder = os.path.join(root, domain, split, c)
            os.makedirs(folder, exist_ok=True)
            for k in range(n):
                Image.new("RGB", (40 + k, 30), COLOURS[c]).save(os.path.join(folder, f"{k}.png"))
    return root


def _cfg(root, domains=("flowers",)):
    return DataConfig(name="imagenet_sketch", root=str(root), domains=list(domains) if domains else None)


@pytest.fixture()
def tree(tmp_path):
    return make_tree(str(tmp_path / "sketch"))


def test_classes_labels_shapes_and_imagenet_normalisation(tree):
    flowers = build_domains(_cfg(tree))["flowers"]
    assert flowers.classes == ("ant", "bee", "cat") and flowers.num_classes == 3
    assert flowers.input_size == (224, 224)
    assert (len(flowers.train), len(flowers.val)) == (9, 6)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    for split in (flowers.train, flowers.val):
        for i in range(len(split)):
            x, y = split[i]
            assert x.shape == (3, 224, 224)
            rgb = (x * std + mean).mean((1, 2))
            assert torch.allclose(rgb, torch.tensor(COLOURS[flowers.classes[y]]) / 255, atol=0.01)
    names = [type(t).__name__ for t in flowers.train.transform.transforms]
    assert names[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]


def test_unknown_domain_allowed_when_folder_exists(tree):
    make_tree(tree, domain="my_lab_set", classes=("ant", "bee"))
    domains = build_domains(_cfg(tree, ["my_lab_set", "flowers"]))
    assert list(domains) == ["my_lab_set", "flowers"] and domains["my_lab_set"].num_classes == 2


def test_source_is_first_named_domain(tree):
    make_tree(tree, domain="imagenet", classes=("cat",))
    assert build_source(_cfg(tree, ["imagenet", "flowers"])).name == "imagenet"
    with pytest.raises(ValueError, match="data.domains"):
        build_source(_cfg(tree, None))


def test_list_domains(tree):
    assert list_domains(_cfg(tree)) == ["cubs_cropped", "stanford_cars_cropped", "flowers", "wikiart", "sketches"]


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        build_domains(_cfg(tmp_path / "absent"))


def test_unknown_domain_without_folder(tree):
    with pytest.raises(ValueError, match=r"'nope'.*known: cubs_cropped.*on disk: flowers"):
        build_domains(_cfg(tree, ["flowers", "nope"]))


def test_known_domain_missing_on_disk(tree):
    with pytest.raises(FileNotFoundError, match=r"sketches.*train"):
        build_domains(_cfg(tree, ["flowers", "sketches"]))


def test_missing_test_split(tree):
    os.rename(os.path.join(tree, "flowers", "test"), os.path.join(tree, "flowers", "val"))
    with pytest.raises(FileNotFoundError, match=r"test split of domain 'flowers'"):
        build_domains(_cfg(tree))


def test_empty_class_folder(tree):
    folder = os.path.join(tree, "flowers", "test", "bee")
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    with pytest.raises(ValueError, match=r"'flowers'.*test/bee"):
        build_domains(_cfg(tree))


def test_class_missing_from_test(tree):
    os.makedirs(os.path.join(tree, "flowers", "train", "dog"))
    Image.new("RGB", (8, 8)).save(os.path.join(tree, "flowers", "train", "dog", "0.png"))
    with pytest.raises(ValueError, match=r"'flowers'.*in train but not in test: dog"):
        build_domains(_cfg(tree))


def test_corrupt_image_fails_up_front(tree):
    with open(os.path.join(tree, "flowers", "train", "cat", "1.png"), "wb") as f:
        f.write(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"cat/1\.png.*'flowers'"):
        build_domains(_cfg(tree))


def test_cropped_domains_are_resized_whole_as_piggyback_does():
    pixels = np.full((256, 320, 3), 128, dtype=np.uint8)
    pixels[:12], pixels[-12:], pixels[:, :12], pixels[:, -12:] = 255, 255, 255, 255  # a white frame at the edge
    image = Image.fromarray(pixels)
    std, mean = torch.tensor(IMAGENET_STD)[:, None], torch.tensor(IMAGENET_MEAN)[:, None]

    def corner(domain, split):
        train_tf, test_tf = transforms_for(domain)
        x = (train_tf if split == "train" else test_tf)(image)
        assert x.shape == (3, 224, 224)
        return float((x[:, 0, :1] * std + mean).mean())

    assert corner("cubs_cropped", "val") > 0.95 and corner("cubs_cropped", "train") > 0.95  # the frame stays
    assert corner("flowers", "val") < 0.6  # Resize(256) + CenterCrop(224) cuts it
