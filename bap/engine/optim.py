"""The trainer's two optimizers (METHOD 3): Adam on the latent switches (Piggyback), SGD on BN and heads.

``fused``: one kernel updates the many small latent vectors and BN parameters (a Python loop otherwise).
"""

from __future__ import annotations

import torch

from bap.config import TrainConfig
from bap.models.multidomain import MultiDomainNet


def switch_optimizer(model: MultiDomainNet, cfg: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(model.switch_parameters(), lr=cfg.switch_lr, fused=True)


def domain_optimizer(model: MultiDomainNet, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.domain_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, fused=True)
