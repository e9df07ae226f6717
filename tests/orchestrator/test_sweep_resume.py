"""Resume continues the same sweep or nothing: the config a sweep started with is stored and compared."""

import dataclasses

import pytest

from orchestrator.config import SweepConfig
from orchestrator.sweep import CONFIG_FILE, check_same_sweep, save_sweep_config


def test_the_same_config_resumes_and_the_cluster_address_may_change(tmp_path):
    cfg = SweepConfig(budgets=[0.25, 0.5])
    save_sweep_config(str(tmp_path), cfg)
    check_same_sweep(str(tmp_path), dataclasses.replace(cfg, resume=True))
    moved = dataclasses.replace(cfg, resume=True, ray=dataclasses.replace(cfg.ray, address="ray://head:10001"))
    check_same_sweep(str(tmp_path), moved)


def test_a_changed_config_is_refused_naming_every_key_and_the_ways_out(tmp_path):
    cfg = SweepConfig(budgets=[0.25, 0.5])
    save_sweep_config(str(tmp_path), cfg)
    changed = dataclasses.replace(cfg, resume=True, budgets=[0.25, 0.5, 1.0],
                                  train=dataclasses.replace(cfg.train, epochs=3))
    with pytest.raises(SystemExit) as refused:
        check_same_sweep(str(tmp_path), changed)
    message = str(refused.value)
    assert "budgets: [0.25, 0.5] -> [0.25, 0.5, 1.0]" in message
    assert "train.epochs: 10 -> 3" in message
    assert "start a new sweep" in message and "resume with the old values" in message


def test_a_sweep_without_its_config_is_not_resumed(tmp_path):
    with pytest.raises(SystemExit, match=f"no {CONFIG_FILE}"):
        check_same_sweep(str(tmp_path), SweepConfig(resume=True))
