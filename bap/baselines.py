"""The baselines every method result is measured against (METHOD 3b, 10): switches chosen by a fixed ranking,
never trained.

Rankings, one per baseline (shared ones give every domain the same):
- ``random``: each domain its own random ranking;
- ``random_shared`` / ``random_shared_annealed``: one random ranking for every domain;
- ``magnitude_shared`` / ``magnitude_annealed``: the input channels whose frozen weights ``W[:, c]`` have the largest
  L2 norm relative to their layer's mean first (magnitude pruning, comparable across layers).

One-shot baselines cut their ranking at beta from the first step (``baseline_masks``). Annealed ones are gradual
magnitude pruning (Zhu and Gupta 2017) on frozen weights: the ranking becomes the latents' order
(``bap.budget.order_latents``) and the learned methods' own selection cuts it at the annealed target every step,
so the final masks are the one-shot baseline's and only the schedule differs. Each fills its budget in the
method's cost unit, and BN and heads train for the same steps as a method's (``Trainer``).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from bap.budget import top_by_cost
from bap.config import BASELINES, ONE_SHOT_BASELINES
from bap.models.multidomain import MultiDomainNet


def magnitude_scores(model: MultiDomainNet) -> Tensor:
    """One score per switch, in the model's switched-conv order: the L2 norm of the frozen weights an input
    channel feeds, over its layer's mean norm."""
    scores = []
    for conv in model.switched_convs().values():
        norms = conv.weight.detach().double().flatten(2).transpose(0, 1).flatten(1).norm(dim=1)  # one per input
        scores.append(norms / norms.mean().clamp_min(1e-12))
    return torch.cat(scores).cpu()


def baseline_scores(model: MultiDomainNet, kind: str, generator: torch.Generator) -> dict[str, Tensor]:
    """domain -> one score per switch (model order) of baseline ``kind``: the higher, the longer a switch stays on."""
    if kind not in BASELINES:
        raise ValueError(f"baseline {kind!r} is not known; use one of {', '.join(BASELINES)}")
    size = sum(c.in_channels for c in model.switched_convs().values())

    def draw() -> Tensor:
        return torch.rand(size, generator=generator, dtype=torch.float64)

    if kind == "random":
        return {d: draw() for d in model.domains}
    common = magnitude_scores(model) if kind.startswith("magnitude") else draw()
    return {d: common for d in model.domains}


def baseline_masks(model: MultiDomainNet, kind: str, budget: float, costs: Mapping[str, Tensor],
                   generator: torch.Generator) -> dict[str, dict[str, Tensor]]:
    """domain -> conv -> boolean mask over input channels of one-shot baseline ``kind`` at ``budget``
    (cost-weighted)."""
    if kind not in ONE_SHOT_BASELINES:
        raise ValueError(f"{kind!r} is no one-shot baseline; use one of {', '.join(ONE_SHOT_BASELINES)}")
    convs = model.switched_convs()
    cost = torch.cat([costs[n] for n in convs]).cpu()
    masks = {}
    for domain, scores in baseline_scores(model, kind, generator).items():
        parts = torch.split(top_by_cost(scores, cost, budget), [c.in_channels for c in convs.values()])
        masks[domain] = {n: part.to(c.weight.device) for (n, c), part in zip(convs.items(), parts)}
    return masks
