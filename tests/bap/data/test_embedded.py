"""The embedded multi-domain data set: determinism, shapes, balance, and difficulty (bap/data/embedded/)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler

from bap.config import DataConfig
from bap.data import build_domains, build_source, list_domains
from bap.data.embedded import DOMAINS, TARGETS, generate

TINY = dict(image_size=16, train_per_class=4, val_per_class=2)


@pytest.fixture(scope="module")
def full():
    """All seven domains at the default size (60 + 50 per class, 32x32): uint8 (train_x, train_y, val_x, val_y)."""
    cfg = DataConfig()
    return {name: generate(name, cfg.image_size, cfg.train_per_class, cfg.val_per_class, cfg.seed) for name in DOMAINS}


def _ridge(train_x, train_y, val_x, val_y, alpha=100.0):
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    return RidgeClassifier(alpha=alpha).fit((train_x - mean) / std, train_y).score((val_x - mean) / std, val_y)


def _pixels(x):
    return x.reshape(len(x), -1).float().numpy() / 255


def _spectrum(x):
    """log |FFT| of the standardised grey image: translation-invariant, the classic texture baseline."""
    g = x.float().mean(1)
    g = (g - g.mean((1, 2), keepdim=True)) / (g.std((1, 2), keepdim=True) + 1e-3)
    return torch.log1p(torch.fft.rfft2(g).abs()).flatten(1).numpy()


def test_domain_lists():
    assert list_domains(DataConfig()) == ["digits", "textures", "scenes", "faces", "letters", "gratings"] == list(TARGETS)
    assert build_source(DataConfig(**TINY)).name == "shapes"
    assert list(build_domains(DataConfig(domains=["faces", "shapes"], **TINY))) == ["faces", "shapes"]
    with pytest.raises(ValueError, match=r"'cifar'.*known: shapes, digits"):
        build_domains(DataConfig(domains=["digits", "cifar"], **TINY))


def test_items_shapes_balance_and_normalisation():
    cfg = DataConfig(image_size=24, train_per_class=6, val_per_class=3, source_train_per_class=9)
    for name, domain in {**build_domains(cfg), "shapes": build_source(cfg)}.items():
        assert domain.input_size == (24, 24)
        assert domain.num_classes == len(domain.classes) == len(DOMAINS[name].classes) <= 10
        # the source domain, used only for pretraining, has its own (larger by default) train size
        for split, per_class in ((domain.train, 9 if name == "shapes" else 6), (domain.val, 3)):
            assert len(split) == per_class * domain.num_classes
            assert torch.bincount(split.labels, minlength=domain.num_classes).tolist() == [per_class] * domain.num_classes
            x, y = split[0]
            assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and isinstance(y, int)
        # Normalised with the train split's own statistics: zero mean, unit std per channel (val is unaugmented).
        train = torch.stack([domain.train.images[i].float() / 255 for i in range(len(domain.train))])
        normalised = (train - domain.train.mean) / domain.train.std
        assert torch.allclose(normalised.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
        assert torch.allclose(normalised.std((0, 2, 3)), torch.ones(3), atol=1e-2)
        assert domain.val.augment is False and domain.train.augment is True


def test_flip_only_where_it_keeps_the_class():
    domains = build_domains(DataConfig(domains=list(DOMAINS), **TINY))
    assert {n: d.train.flip for n, d in domains.items()} == {
        "shapes": True, "digits": False, "textures": True, "scenes": True, "faces": False, "letters": False,
        "gratings": False,
    }


@pytest.mark.parametrize("name", list(DOMAINS))
def test_deterministic_for_a_seed(name):
    first = generate.__wrapped__(name, 16, 4, 2, 0)  # bypass the in-process cache
    again = generate.__wrapped__(name, 16, 4, 2, 0)
    other = generate.__wrapped__(name, 16, 4, 2, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0][: len(first[2])], first[2])  # train and val are different draws


def test_same_images_whatever_else_is_requested():
    alone = build_domains(DataConfig(domains=["scenes"], **TINY))["scenes"]
    generate.cache_clear()
    together = build_domains(DataConfig(domains=["faces", "scenes"], **TINY))["scenes"]
    assert torch.equal(alone.train.images, together.train.images)


def test_cache_returns_the_same_tensors():
    cfg = DataConfig(domains=["digits"], **TINY)
    assert build_domains(cfg)["digits"].train.images is build_domains(cfg)["digits"].train.images


def test_domains_differ_in_low_level_statistics(full):
    """Which domain an image comes from is predictable from 9 crude statistics (colour, contrast, edges)."""

    def stats(x):
        x = x.float() / 255
        g = x.mean(1)
        return torch.cat([
            x.mean((2, 3)), x.std((2, 3)),
            (g[:, 1:] - g[:, :-1]).abs().mean((1, 2))[:, None],
            (g[:, :, 1:] - g[:, :, :-1]).abs().mean((1, 2))[:, None],
            (x.max(1).values - x.min(1).values).mean((1, 2))[:, None],  # saturation
        ], 1).numpy()

    names = list(full)
    train_x = np.concatenate([stats(full[n][0]) for n in names])
    train_y = np.concatenate([[i] * len(full[n][0]) for i, n in enumerate(names)])
    val_x = np.concatenate([stats(full[n][2]) for n in names])
    val_y = np.concatenate([[i] * len(full[n][2]) for i, n in enumerate(names)])
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=1000).fit(scaler.transform(train_x), train_y)
    assert clf.score(scaler.transform(val_x), val_y) > 0.6  # chance 1/7


def test_learnable_but_not_trivial(full):
    """Linear baselines beat chance clearly on every target, but none comes near 100%, and mean colour alone
    is far from enough. Pixels suit digits/faces/scenes; textures need the (translation-invariant) spectrum."""
    for name in TARGETS:
        train_x, train_y, val_x, val_y = full[name]
        chance = 1 / len(DOMAINS[name].classes)
        best = max(
            _ridge(_pixels(train_x), train_y, _pixels(val_x), val_y),
            _ridge(_spectrum(train_x), train_y, _spectrum(val_x), val_y),
        )
        colour = _ridge(train_x.float().mean((2, 3)).numpy(), train_y, val_x.float().mean((2, 3)).numpy(), val_y, 1.0)
        assert 2 * chance < best < 0.95, (name, best)
        assert colour < 0.6, (name, colour)


def test_more_frozen_channels_more_accuracy(full):
    """A frozen random conv layer: 64 channels beat 4 on average, the effect budget-aware pruning trades on."""
    weights = torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    weights -= weights.mean((1, 2, 3), keepdim=True)

    def features(x, k):
        x = x.float() / 255
        x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
        return F.adaptive_avg_pool2d(F.relu(F.conv2d(x, weights[:k], padding=2)), 4).flatten(1).numpy()

    gains = []
    for name in TARGETS:
        train_x, train_y, val_x, val_y = full[name]
        narrow, wide = (_ridge(features(train_x, k), train_y, features(val_x, k), val_y) for k in (4, 64))
        gains.append(wide - narrow)
    assert np.mean(gains) > 0.05 and sum(g > 0 for g in gains) >= 3, gains


def test_testbed_has_enough_val_images_and_disjoint_sources(full):
    """At least 50 val images a class (binomial s.e. of a domain's accuracy under 3 points at 50%), and no val
    image equal to a train image in any domain."""
    for name in TARGETS:
        train_x, _, val_x, val_y = full[name]
        assert np.bincount(val_y.numpy()).min() >= 50, name
        train = {bytes(x.numpy()) for x in train_x}
        assert not any(bytes(x.numpy()) in train for x in val_x), name


def test_scenes_crop_train_and_val_from_disjoint_columns(monkeypatch):
    from bap.data.embedded import draw as embedded_draw

    seen = []
    real = embedded_draw.random_crops
    monkeypatch.setattr(embedded_draw, "random_crops", lambda *a, **k: seen.append(k["region"]) or real(*a, **k))
    rng = np.random.default_rng(0)
    embedded_draw.draw_scenes(np.arange(8), "train", 16, rng, 0, 3)
    embedded_draw.draw_scenes(np.arange(8), "val", 16, rng, 0, 3)
    train_region, val_region = seen[0], seen[-1]
    assert train_region[1] <= val_region[0]


def test_affine_warp_rotates_counter_clockwise_as_displayed():
    """The faces labels ("rotated_ccw" = quarter 1) rely on this convention."""
    from bap.data.embedded.geometric import affine_warp

    src = torch.zeros(1, 1, 9, 9)
    src[0, 0, 0:3, 3:6] = 1  # a blob at the top centre...
    out = affine_warp(src, 9, np.array([90.0]), np.array([1.0]), np.zeros((1, 2)))[0, 0]
    assert out[3:6, 0:3].mean() > 0.9 and out[0:3, 3:6].mean() < 0.1  # ...ends up at the left centre
