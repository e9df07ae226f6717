"""benchmarks/data_loading.py: the generated trees read back through bap.data; rows and verdict logic."""

import os

import numpy as np
from PIL import Image

from bap.config import DataConfig
from bap.data import build_domains, decathlon, imagefolder
from benchmarks import data_loading as dl


def test_decathlon_tree_has_official_classes_and_the_readers_input_sizes(tmp_path):
    sizes = {"dtd": (96, 72), "svhn": (72, 72)}
    root = dl.write_decathlon_tree(str(tmp_path / "vd"), sizes, {"train": 1, "val": 1})
    domains = build_domains(DataConfig(name="decathlon", root=root, domains=list(sizes)))
    for name, data in domains.items():
        assert data.num_classes == decathlon.DOMAINS[name] == len(data.train) == len(data.val)
        x, label = data.train[0]
        assert tuple(x.shape[-2:]) == data.input_size and 0 <= label < data.num_classes
    assert domains["dtd"].input_size == (64, 64) and domains["svhn"].input_size == (72, 72)
    with Image.open(os.path.join(root, "data", "dtd", "train", "000001.jpg")) as image:
        assert image.size == (96, 72) and image.format == "JPEG"


def test_imagefolder_tree_has_published_classes_and_224_crops(tmp_path):
    sizes = {"flowers": (40, 32)}  # small images keep the test fast; the benchmark writes 256x256
    root = dl.write_imagefolder_tree(str(tmp_path / "sketch"), sizes, {"train": 2, "test": 1})
    data = build_domains(DataConfig(name="imagenet_sketch", root=root, domains=["flowers"]))["flowers"]
    assert data.num_classes == imagefolder.DOMAINS["flowers"] and len(data.train) == 2 * data.num_classes
    assert tuple(data.train[0][0].shape) == (3, 224, 224)


def test_natural_images_are_photo_like_jpegs(tmp_path):
    image = dl.natural_image(np.random.default_rng(0), (72, 72))
    path = tmp_path / "a.jpg"
    image.save(path, quality=dl.JPEG_QUALITY)
    # Between a flat colour (~1 KB) and pure noise (~10 KB) at 72x72: the size of real Decathlon JPEGs.
    assert 1500 < path.stat().st_size < 8000
    assert np.asarray(image).std() > 20


def test_quick_settings_give_every_domain_a_full_batch():
    for quick in (True, False):
        chosen, batch, rounds = dl.settings(quick)
        assert rounds >= 5
        for s in chosen:
            classes = decathlon.DOMAINS if s.data == "decathlon" else imagefolder.DOMAINS
            assert all(classes[d] * s.per_class >= batch for d in s.domains)


def test_rows_and_verdict_compare_each_loader_with_the_step():
    setting = dl.Setting("resnet26", 0.25, "decathlon", ("dtd",), steps=2, per_class=1)
    rates = {"step": 100.0, **{f"loader {w}": 50.0 + 100 * w for w in dl.WORKERS},
             **{f"startup {w}": 0.1 * w for w in dl.WORKERS},
             **{f"training {w}": 80.0 - 10 * w for w in dl.WORKERS}}
    rows = dl.rows_of(setting, rates)
    assert [r["data-bound"] for r in rows] == [True, False, False]
    assert rows[0]["workers"] == "0 (default)" and rows[0]["loader / step"] == 0.5
    assert rows[2]["loader start-up (ms)"] == 200.0
    text = dl.verdict(rows)
    assert "Data-bound" in text and "workers 0 (default)" in text
    assert "1.67x (resnet26 w0.25, workers 2)" in text  # the step's 100 img/s against training's 60
