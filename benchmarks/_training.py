"""Training on the embedded data, shared by the benchmarks that train BAP: settings, the cached pretrained
backbone and one run's config (a sharing loss or a baseline of ``bap.baselines``).
"""

from __future__ import annotations

import os
from typing import Mapping

from bap import ExperimentConfig, PretrainConfig, pretrain
from bap.config import BudgetConfig, DataConfig, ModelConfig, SharingConfig, TrainConfig
from bap.data import build_source

CACHE = os.environ.get("BAP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "bap-sweeps"))
BATCH_SIZE = 32
LR = 0.05


def settings(quick: bool) -> dict:
    """Backbone width, pretraining and BAP training lengths, and train images per class."""
    if quick:
        return dict(width=0.125, pretrain_epochs=2, pretrain_steps=40, epochs=2, steps=10, per_class=30)
    return dict(width=0.25, pretrain_epochs=10, pretrain_steps=80, epochs=6, steps=30, per_class=60)


def pretrained_backbone(s: Mapping, data: DataConfig) -> str:
    """Path of a resnet26 pretrained on the embedded source domain; trained (about a minute) on first use only."""
    weights = os.path.join(CACHE, f"bench_resnet26_w{s['width']:g}_e{s['pretrain_epochs']}x{s['pretrain_steps']}.pt")
    if not os.path.isfile(weights):
        source_acc = pretrain(PretrainConfig(width=s["width"], epochs=s["pretrain_epochs"],
                                             steps_per_epoch=s["pretrain_steps"], device="cpu"),
                              build_source(data), weights)
        print(f"pretrained the backbone on the source domain: val top-1 {source_acc:.1f}%")
    return weights


def experiment_config(s: Mapping, weights: str, data: DataConfig, budget: float, sharing: str, weight: float,
                      seed: int) -> ExperimentConfig:
    """One CPU run of the benchmark settings ``s`` (width, epochs, steps) at ``budget`` with a sharing loss."""
    return ExperimentConfig(
        model=ModelConfig(backbone="resnet26", width=s["width"], weights=weights),
        budget=BudgetConfig(budget=budget), sharing=SharingConfig(loss=sharing, weight=weight), data=data,
        train=TrainConfig(epochs=s["epochs"], steps_per_epoch=s["steps"], batch_size=BATCH_SIZE, lr=LR, device="cpu",
                          seed=seed),
    )
