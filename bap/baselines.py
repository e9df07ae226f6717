"""The baselines every method result is measured against (METHOD 3b, 10): switches chosen once, never trained.

- ``random``: each domain its own random channels at the budget;
- ``random_shared``: one random subset for every domain;
- ``magnitude_shared``: one subset for every domain, the input channels whose frozen weights ``W[:, c]`` have the
  largest L2 norm relative to their layer's mean (classic magnitude pruning, comparable across layers).

Each fills its budget in the method's own cost unit, exactly as ``select_to_budget`` does for learned switches, so
a comparison is at equal usage. BN and heads train for the same steps as the method's (``Trainer``).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from bap.config import BASELINES
from bap.losses import top_by_cost
from bap.models.multidomain import MultiDomainNet


def _magnitude_scores(model: MultiDomainNet) -> Tensor:
    scores = []
    for conv in model.switched_convs().values():
        norms = conv.weight.detach().double().flatten(2).transpose(0, 1).flatten(1).norm(dim=1)  # one per input
        scores.append(norms / norms.mean().clamp_min(1e-12))
    return torch.cat(scores)


def baseline_masks(model: MultiDomainNet, kind: str, budget: float, costs: Mapping[str, Tensor],
                   generator: torch.Generator) -> dict[str, dict[str, Tensor]]:
    """domain -> conv -> boolean mask over input channels of baseline ``kind`` at ``budget`` (cost-weighted)."""
    if kind not in BASELINES:
        raise ValueError(f"baseline {kind!r} is not known; use one of {', '.join(BASELINES)}")
    convs = model.switched_convs()
    cost = torch.cat([costs[n] for n in convs]).cpu()

    def split(keep: Tensor) -> dict[str, Tensor]:
        parts = torch.split(keep, [c.in_channels for c in convs.values()])
        return {n: part.to(c.weight.device) for (n, c), part in zip(convs.items(), parts)}

    def draw() -> dict[str, Tensor]:
        return split(top_by_cost(torch.rand(len(cost), generator=generator, dtype=torch.float64), cost, budget))

    if kind == "random":
        return {d: draw() for d in model.domains}
    common = draw() if kind == "random_shared" else split(top_by_cost(_magnitude_scores(model).cpu(), cost, budget))
    return {d: dict(common) for d in model.domains}
