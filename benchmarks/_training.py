"""Training on the embedded data, shared by the benchmarks that train BAP: settings, the cached pretrained
backbone, one run's config, and the random-switch baseline (switches fixed at random, only BN and heads trained).
"""

from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import Tensor

from bap import ExperimentConfig, PretrainConfig, pretrain
from bap.config import BudgetConfig, DataConfig, ModelConfig, SharingConfig, TrainConfig
from bap.data import DomainData, build_source
from bap.engine.trainer import Trainer
from bap.losses import budget_usage
from bap.models import MultiDomainNet
from bap.train import TrainResult, build_for, finalize

CACHE = os.environ.get("BAP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "bap-sweeps"))
BATCH_SIZE = 32
LR = 0.05

Masks = dict[str, dict[str, Tensor]]


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


# ---- the random-switch baseline --------------------------------------------------------------------------------
def random_budget_masks(model: MultiDomainNet, budget: float, costs: Mapping[str, Tensor], *, shared: bool,
                        generator: torch.Generator) -> Masks:
    """Random switches meeting ``budget``: every switched conv keeps ``floor(budget * C_in)`` (at least one) random
    input channels, so each domain's cost-weighted usage is at most ``budget`` in the params and switches units.

    ``shared``: one draw for all domains (the union is then one domain's mask); else an independent draw per
    domain. Raises if a domain's ``budget_usage`` (the measure the method's budget uses) exceeds ``budget``, which
    the one-channel minimum can cause at tiny budgets.
    """
    def draw() -> dict[str, Tensor]:
        masks = {}
        for name, conv in model.switched_convs().items():
            keep = max(1, int(budget * conv.in_channels))
            mask = torch.zeros(conv.in_channels, dtype=torch.bool)
            mask[torch.randperm(conv.in_channels, generator=generator)[:keep]] = True
            masks[name] = mask
        return masks

    common = draw() if shared else None
    masks = {domain: common if shared else draw() for domain in model.domains}
    for domain, per_conv in masks.items():
        usage = float(budget_usage({n: m.to(torch.float64) for n, m in per_conv.items()}, costs))
        if usage > budget + 1e-9:
            raise ValueError(f"random masks of domain {domain!r} use {usage:.4f} > budget {budget}; "
                             f"the one-channel minimum per conv exceeds this budget, use a larger one")
    return masks


def train_fixed_switches(cfg: ExperimentConfig, domains: Mapping[str, DomainData], *, shared: bool) -> TrainResult:
    """The naive baseline: random switches meeting ``cfg.budget`` (seeded by ``cfg.train.seed``), never trained;
    BN and heads trained by the same trainer for the same steps as BAP, then counted and pruned by ``finalize``."""
    if cfg.sharing.loss != "none":
        raise ValueError(f"sharing.loss={cfg.sharing.loss!r}: fixed switches have no sharing gradient; use 'none'")
    torch.manual_seed(cfg.train.seed)
    model = build_for(cfg, domains)
    trainer = Trainer(model, domains, cfg)
    masks = random_budget_masks(model, cfg.budget.budget, trainer.costs, shared=shared,
                                generator=torch.Generator().manual_seed(cfg.train.seed))
    model.set_masks(masks)
    for latent in model.switch_parameters():
        latent.requires_grad_(False)  # Adam skips them: no gradient, so the random masks stay as drawn
    trainer.fit()
    return finalize(trainer)
