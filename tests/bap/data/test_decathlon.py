"""Visual Decathlon reader on tiny generated devkit trees (bap/data/decathlon.py)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from bap.config import DataConfig
from bap.data import build_domains, build_source, list_domains

# Colour of the class with the i-th smallest category id: the label can be read off every image.
PALETTE = [(230, 30, 30), (30, 200, 40), (40, 60, 220), (220, 220, 40)]
# Non-contiguous ids, listed unsorted, with a per-domain offset as in the real devkit.
CATEGORY_IDS = {"dtd": [5007, 5000, 5003], "svhn": [9010, 9002]}
SIZES = {"dtd": (90, 72), "svhn": (72, 80)}  # (W, H): shorter side 72 as in the release
PER_SPLIT = {"train": 4, "val": 2}


def _label(domain, category_id):
    return sorted(CATEGORY_IDS[domain]).index(category_id)


def make_tree(root, domains=("dtd", "svhn")):
    """Write `<root>/annotations/<d>_<split>.json` and JPEGs under `<root>/data/<d>/<split>/`."""
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for d in domains:
        for split, per_class in PER_SPLIT.items():
            folder = os.path.join(root, "data", d, split)
            os.makedirs(folder, exist_ok=True)
            images, annotations = [], []
            for c, category_id in enumerate(CATEGORY_IDS[d]):
                for k in range(per_class):
                    image_id = 1000 + 37 * (c * per_class + k)  # ids are not positions
                    file_name = f"data/{d}/{split}/{image_id}.jpg"
                    Image.new("RGB", SIZES[d], PALETTE[_label(d, category_id)]).save(os.path.join(root, file_name))
                    images.append({"id": image_id, "file_name": file_name, "width": SIZES[d][0]})
                    annotations.append({"id": len(annotations), "image_id": image_id, "category_id": category_id})
            annotations.reverse()  # annotation order differs from image order: join must be by image_id
            categories = [{"id": i, "name": f"class{i}"} for i in CATEGORY_IDS[d]]
            with open(os.path.join(root, "annotations", f"{d}_{split}.json"), "w") as f:
                json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return root


def _cfg(root, domains=("dtd", "svhn")):
    return DataConfig(name="decathlon", root=str(root), domains=list(domains) if domains else None)


def _edit(root, name, fn):
    path = os.path.join(root, "annotations", name)
    with open(path) as f:
        data = json.load(f)
    fn(data)
    with open(path, "w") as f:
        json.dump(data, f)


@pytest.fixture()
def tree(tmp_path):
    return make_tree(str(tmp_path / "decathlon"))


def test_labels_shapes_and_normalisation(tree):
    domains = build_domains(_cfg(tree))
    assert list(domains) == ["dtd", "svhn"]
    dtd, svhn = domains["dtd"], domains["svhn"]
    assert (dtd.num_classes, svhn.num_classes) == (3, 2)
    assert dtd.classes == ("class5000", "class5003", "class5007")
    assert dtd.input_size == (64, 64) and svhn.input_size == (72, 72)
    assert len(dtd.train) == 12 and len(dtd.val) == 6
    for domain, side in ((dtd, 64), (svhn, 72)):
        normalize = domain.val.transform.transforms[-1]
        mean, std = torch.tensor(normalize.mean), torch.tensor(normalize.std)
        # Solid colours: mean/std over the train pixels follow from the palette (JPEG adds ~1/255).
        colours = torch.tensor([PALETTE[i] for i in range(domain.num_classes)], dtype=torch.float64) / 255
        assert torch.allclose(mean.double(), colours.mean(0), atol=0.02)
        assert torch.allclose(std.double(), colours.std(0, unbiased=False), atol=0.02)
        for split in (domain.train, domain.val):
            for i in range(len(split)):
                x, y = split[i]
                assert x.shape == (3, side, side) and x.dtype == torch.float32
                rgb = (x * std[:, None, None] + mean[:, None, None]).mean((1, 2))
                assert torch.allclose(rgb, torch.tensor(PALETTE[y]) / 255, atol=0.03), (domain.name, i, y)


def test_val_split_labels_follow_image_ids_not_list_order(tree):
    dtd = build_domains(_cfg(tree, ["dtd"]))["dtd"]
    for path, label in dtd.val.samples:
        colour = Image.open(path).convert("RGB").getpixel((5, 5))
        assert np.allclose(colour, PALETTE[label], atol=4)


def test_train_transform_is_random_eval_is_not(tree):
    dtd = build_domains(_cfg(tree, ["dtd"]))["dtd"]
    names = [type(t).__name__ for t in dtd.train.transform.transforms]
    assert names[:3] == ["Resize", "RandomCrop", "RandomHorizontalFlip"]
    assert [type(t).__name__ for t in dtd.val.transform.transforms][:2] == ["Resize", "CenterCrop"]


def test_full_frame_domains_never_flip(tree):
    svhn = build_domains(_cfg(tree, ["svhn"]))["svhn"]
    names = [type(t).__name__ for t in svhn.train.transform.transforms]
    assert "RandomHorizontalFlip" not in names and "CenterCrop" in names


def test_list_domains_and_source(tree):
    assert list_domains(_cfg(tree)) == [
        "imagenet12", "aircraft", "cifar100", "daimlerpedcls", "dtd",
        "gtsrb", "vgg-flowers", "omniglot", "svhn", "ucf101",
    ]
    with pytest.raises(FileNotFoundError, match="imagenet12_train.json"):
        build_source(_cfg(tree))  # the source is imagenet12, absent from this tree


# ----------------------------------------------------------------------------- bad input


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_domains(_cfg(tmp_path / "nowhere"))


def test_missing_annotations_dir(tmp_path):
    os.makedirs(tmp_path / "root" / "data")
    with pytest.raises(FileNotFoundError, match="annotations"):
        build_domains(_cfg(tmp_path / "root"))


def test_missing_annotation_file(tree):
    os.remove(os.path.join(tree, "annotations", "svhn_val.json"))
    with pytest.raises(FileNotFoundError, match=r"svhn_val\.json.*'svhn'|'svhn'.*svhn_val\.json"):
        build_domains(_cfg(tree))


def test_unknown_domain_lists_known(tree):
    with pytest.raises(ValueError, match=r"'mnist'.*known: imagenet12, aircraft"):
        build_domains(_cfg(tree, ["dtd", "mnist"]))


def test_every_domain_needed_without_explicit_list(tree):
    with pytest.raises(FileNotFoundError, match="imagenet12"):
        build_domains(_cfg(tree, None))


def test_annotation_for_unknown_image_id(tree):
    _edit(tree, "dtd_train.json", lambda d: d["annotations"].append({"id": 99, "image_id": 424242, "category_id": 5000}))
    with pytest.raises(ValueError, match=r"424242.*'dtd'"):
        build_domains(_cfg(tree))


def test_annotation_with_unknown_category(tree):
    _edit(tree, "dtd_val.json", lambda d: d["annotations"][0].update(category_id=1))
    with pytest.raises(ValueError, match=r"dtd_val\.json.*category id 1\b"):
        build_domains(_cfg(tree))


@pytest.mark.parametrize("name", ["../../etc/passwd", "data/dtd/../../../outside.jpg", "/etc/passwd"])
def test_file_names_outside_the_root_are_refused(tree, name):
    _edit(tree, "dtd_train.json", lambda d: d["images"][0].update(file_name=name))
    with pytest.raises(ValueError, match=r"dtd_train\.json: file_name .* leaves the data root"):
        build_domains(_cfg(tree))


def test_an_image_linked_to_a_file_outside_the_root_is_refused_a_linked_folder_is_not(tree, tmp_path):
    victim = os.path.join(tree, "data", "svhn", "val", "1037.jpg")
    outside = tmp_path / "secret.jpg"
    os.replace(victim, outside)
    os.symlink(outside, victim)
    with pytest.raises(ValueError, match=r"1037\.jpg of domain 'svhn' .* is a link to .*secret\.jpg, outside the data"):
        build_domains(_cfg(tree))
    os.remove(victim)
    os.replace(outside, victim)
    moved = tmp_path / "dtd-elsewhere"  # a data root assembled from a linked folder: the owner's choice
    os.replace(os.path.join(tree, "data", "dtd"), moved)
    os.symlink(moved, os.path.join(tree, "data", "dtd"))
    build_domains(_cfg(tree))


def test_missing_image_file(tree):
    victim = os.path.join(tree, "data", "svhn", "val", "1037.jpg")
    os.remove(victim)
    with pytest.raises(FileNotFoundError, match=r"1037\.jpg.*'svhn'"):
        build_domains(_cfg(tree))


def test_class_absent_from_val(tree):
    def drop_class(d):
        gone = {a["image_id"] for a in d["annotations"] if a["category_id"] == 5003}
        d["annotations"] = [a for a in d["annotations"] if a["image_id"] not in gone]
        d["images"] = [i for i in d["images"] if i["id"] not in gone]

    _edit(tree, "dtd_val.json", drop_class)
    with pytest.raises(ValueError, match=r"'dtd'.*class5003.*val"):
        build_domains(_cfg(tree))


def test_category_lists_differ_between_splits(tree):
    def add_class(d):
        d["categories"].append({"id": 9999, "name": "extra"})
        d["annotations"][0]["category_id"] = 9999  # the split itself stays consistent

    _edit(tree, "svhn_val.json", add_class)
    with pytest.raises(ValueError, match=r"'svhn'.*differ.*in val but not in train: extra"):
        build_domains(_cfg(tree))


def test_invalid_json(tree):
    with open(os.path.join(tree, "annotations", "dtd_train.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match=r"dtd_train\.json.*'dtd'"):
        build_domains(_cfg(tree))


def test_malformed_entry(tree):
    _edit(tree, "dtd_train.json", lambda d: d["images"][0].pop("file_name"))
    with pytest.raises(ValueError, match=r"malformed.*dtd_train\.json"):
        build_domains(_cfg(tree))


def test_garbage_image_fails_up_front(tree):
    victim = os.path.join(tree, "data", "dtd", "train", "1074.jpg")
    with open(victim, "wb") as f:
        f.write(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"1074\.jpg.*'dtd'"):
        build_domains(_cfg(tree))


def test_truncated_image_fails_at_load_time_naming_file(tree):
    domain = build_domains(_cfg(tree, ["dtd"]))["dtd"]
    path, _ = domain.val.samples[0]
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # header intact, pixel data cut
    with pytest.raises(ValueError, match=rf"{os.path.basename(path)}.*'dtd'"):
        domain.val[0]
