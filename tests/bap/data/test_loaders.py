"""train_batches / eval_batches: step counts, homogeneity, revisiting, determinism (bap/data/loaders.py)."""

import logging

import pytest
import torch
from torch.utils.data import Dataset

from bap.data import eval_batches, train_batches
from bap.data.embedded.tensor_dataset import TensorImageDataset


class IndexDataset(Dataset):
    """Item i is (tensor [i], i): batches reveal exactly which samples they hold."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i


def _augmenting(n: int = 12, side: int = 8) -> TensorImageDataset:
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    return TensorImageDataset(images, torch.arange(n) % 3, torch.zeros(3), torch.ones(3), augment=True, pad=2, flip=True)


def test_exact_step_count_full_batches_and_revisits():
    batches = list(train_batches(IndexDataset(10), batch_size=4, num_steps=7, seed=0))
    assert len(batches) == 7
    assert all(len(y) == 4 for _, y in batches)
    for x, y in batches:
        assert torch.equal(x[:, 0].long(), y)  # items stay paired
        assert len(set(y.tolist())) == 4  # no image twice in one batch
    # 10 // 4 = 2 full batches per pass, the 2 leftover indices are dropped, then a new permutation starts.
    for first, second in zip(batches[0::2], batches[1::2]):
        assert not set(first[1].tolist()) & set(second[1].tolist())
    seen = torch.cat([y for _, y in batches])
    assert set(seen.tolist()) == set(range(10))  # 28 draws from 10 images: the small set is revisited
    assert len(seen) == 28


def test_zero_steps_and_bad_arguments():
    assert list(train_batches(IndexDataset(5), 2, 0, seed=0)) == []
    with pytest.raises(ValueError, match="empty"):
        train_batches(IndexDataset(0), 2, 3, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        train_batches(IndexDataset(5), 0, 3, seed=0)


def test_batch_larger_than_data_set_is_clamped(caplog):
    with caplog.at_level(logging.WARNING, logger="bap.data.loaders"):
        batches = list(train_batches(IndexDataset(3), batch_size=8, num_steps=4, seed=1))
    assert "clamping" in caplog.text
    assert len(batches) == 4
    assert all(sorted(y.tolist()) == [0, 1, 2] for _, y in batches)


def test_order_depends_on_seed_only_and_augmentation_on_global_rng():
    data = _augmenting()

    def run(seed, rng_seed):
        torch.manual_seed(rng_seed)
        return list(train_batches(data, batch_size=4, num_steps=5, seed=seed))

    a, b = run(seed=7, rng_seed=0), run(seed=7, rng_seed=0)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    c = run(seed=7, rng_seed=1)  # same order, different crops/flips
    assert all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    assert any(not torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    d = run(seed=8, rng_seed=0)
    assert any(not torch.equal(ya, yd) for (_, ya), (_, yd) in zip(a, d))


def test_resume_from_saved_global_rng_state():
    data = _augmenting()
    torch.manual_seed(0)
    list(train_batches(data, 4, 3, seed=1))  # "epoch 0"
    state = torch.get_rng_state()
    expected = list(train_batches(data, 4, 3, seed=2))  # "epoch 1"
    torch.manual_seed(123)  # a resumed process starts from an unrelated state...
    torch.set_rng_state(state)  # ...and restores the checkpointed one
    resumed = list(train_batches(data, 4, 3, seed=2))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(expected, resumed))


def test_huge_and_negative_seeds_are_accepted():
    for seed in (2**70 + 5, -3):
        assert len(list(train_batches(IndexDataset(6), 2, 2, seed=seed))) == 2


def test_workers_are_deterministic_for_a_seed():
    data = _augmenting()
    a = list(train_batches(data, 4, 3, seed=5, num_workers=1))
    torch.manual_seed(99)  # with workers, augmentation is seeded from `seed`, not the global RNG
    b = list(train_batches(data, 4, 3, seed=5, num_workers=1))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_eval_batches_in_order_and_rng_untouched():
    state = torch.get_rng_state()
    batches = list(eval_batches(IndexDataset(10), batch_size=4))
    assert torch.equal(torch.get_rng_state(), state)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))


def test_eval_of_augmenting_val_split_is_deterministic():
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    val = TensorImageDataset(images, torch.zeros(5), torch.full((3,), 0.5), torch.full((3,), 0.25))
    x, _ = next(eval_batches(val, 5))
    assert torch.allclose(x, (images.float() / 255 - 0.5) / 0.25)
