"""Per-domain BatchNorm: every domain owns its affine parameters and running statistics (METHOD 1).

Domains differ in input statistics; sharing BN statistics across them would mix those statistics, so BA²
(after Rebuffi's residual adapters) gives each domain its own BN while the convolutions stay shared.
"""

from __future__ import annotations

from typing import Iterable

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


class DomainHeads(nn.Module):
    """One linear classifier per domain over the shared final features."""

    def __init__(self, in_features: int, num_classes: dict[str, int]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({d: nn.Linear(in_features, c) for d, c in num_classes.items()})

    def forward(self, x: Tensor, domain: str) -> Tensor:
        return self.heads[domain](x)
