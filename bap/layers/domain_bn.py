"""Per-domain BatchNorm: every domain owns its affine parameters and running statistics (METHOD 1).

Domains differ in input statistics; sharing BN statistics across them would mix those statistics, so BA²
(after Rebuffi's residual adapters) gives each domain its own BN while the convolutions stay shared.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn


class DomainBatchNorm2d(nn.Module):
    def __init__(self, num_features: int, domains: Iterable[str]) -> None:
        super().__init__()
        self.num_features = num_features
        self.bns = nn.ModuleDict({d: nn.BatchNorm2d(num_features) for d in domains})

    def forward(self, x: Tensor, domain: str) -> Tensor:
        if self.num_features == 0:
            return x  # all channels pruned; BatchNorm2d cannot run on zero channels
        return self.bns[domain](x)

    def eval_affine(self, domain: str) -> tuple[Tensor, Tensor] | None:
        """(scale, shift) with ``bn(x) == x * scale + shift`` per channel, or None while BN uses batch statistics."""
        bn = self.bns[domain]
        if bn.training or bn.running_mean is None or self.num_features == 0:
            return None
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        return scale, shift if bn.bias is None else shift + bn.bias


class DomainHeads(nn.Module):
    """One linear classifier per domain over the shared final features."""

    def __init__(self, in_features: int, num_classes: dict[str, int]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({d: nn.Linear(in_features, c) for d, c in num_classes.items()})

    def forward(self, x: Tensor, domain: str) -> Tensor:
        return self.heads[domain](x)
