"""Public surface of bap.data: dispatch on data.name (bap/data/__init__.py, build.py); its import boundary is
tests/test_boundaries.py."""

import pytest

import bap.data
from bap.config import DataConfig


def test_public_names():
    assert set(bap.data.__all__) == {
        "DomainData", "build_domains", "build_source", "check_domains", "eval_batches", "list_domains",
        "train_batches",
    }


@pytest.mark.parametrize(
    ("name", "count"), [("embedded", 6), ("decathlon", 10), ("imagenet_sketch", 5)]
)
def test_list_domains_needs_no_disk(name, count, tmp_path):
    cfg = DataConfig(name=name, root=str(tmp_path / "not-there"))
    assert len(bap.data.list_domains(cfg)) == count


def test_bad_name_after_config_mutation():
    cfg = DataConfig()
    cfg.name = "mnist"  # bypasses __post_init__, as a hand-edited object might
    with pytest.raises(ValueError, match="data.name='mnist'.*embedded"):
        bap.data.list_domains(cfg)
