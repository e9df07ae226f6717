"""Budget usage, the dual-ascent update and BAP's parameter-sharing losses (METHOD 2-3).

All functions take masks as ``{conv name: mask over input channels}`` so the same code scores soft (STE)
masks during training and hard masks in reports.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from bap.counting import conv_output_sizes
from bap.models.multidomain import MultiDomainNet

Masks = Mapping[str, Tensor]


def switch_costs(model: MultiDomainNet, unit: str, input_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """Cost ``w_{l,c}`` of each switch in the budget's unit, normalised to sum to 1 over the network.

    params: the conv weights a switch gates, ``C_out * k^2``; switches: 1; macs: ``C_out * k^2 * H_out * W_out``.
    """
    convs = model.switched_convs()
    sizes = None
    if unit == "macs":
        if input_size is None:
            raise ValueError("budget.unit='macs' needs the input size to weight layers by their output size")
        sizes = conv_output_sizes(model, model.domains[0], input_size)
    costs = {}
    for name, conv in convs.items():
        if unit == "params":
            per_channel = conv.out_channels * conv.kernel_size**2
        elif unit == "switches":
            per_channel = 1
        elif unit == "macs":
            h, w = sizes[name]
            per_channel = conv.out_channels * conv.kernel_size**2 * h * w
        else:
            raise ValueError(f"budget.unit={unit!r} is not supported; use params, switches or macs")
        # float64: the hard budget guarantee compares sums of thousands of small costs against beta exactly.
        costs[name] = torch.full((conv.in_channels,), float(per_channel), dtype=torch.float64, device=conv.weight.device)
    total = sum(c.sum() for c in costs.values())
    return {name: c / total for name, c in costs.items()}


def budget_usage(masks: Masks, costs: Mapping[str, Tensor]) -> Tensor:
    """B_d: the cost-weighted fraction of switches that are on (differentiable through STE masks)."""
    return sum((costs[name] * mask).sum() for name, mask in masks.items())


def dual_update(multiplier: float, usage: float, budget: float, lr: float) -> float:
    """Projected dual ascent: lambda grows while the budget is exceeded and shrinks (to 0) once it is met."""
    return max(0.0, multiplier + lr * (usage - budget))


def intersection_union(domain_masks: Sequence[Masks], costs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """I (cost of switches every domain uses) and U (cost of switches any domain uses)."""
    intersection, union = 0.0, 0.0
    for name, cost in costs.items():
        stacked = torch.stack([m[name] for m in domain_masks])
        intersection = intersection + (cost * stacked.prod(dim=0)).sum()
        union = union + (cost * (1 - (1 - stacked).prod(dim=0))).sum()
    return intersection, union


def sharing_loss(kind: str, domain_masks: Sequence[Masks], costs: Mapping[str, Tensor], eps: float = 1e-8) -> Tensor:
    """BAP's sharing term: small when domains use the same channels. Names are the papers'; the normalisations
    by the total cost (which is 1 here) are ours (METHOD 3)."""
    intersection, union = intersection_union(domain_masks, costs)
    if kind == "int":
        return 1 - intersection
    if kind == "union":
        return union
    if kind == "jaccard":
        return 1 - intersection / (union + eps)
    raise ValueError(f"sharing.loss={kind!r} has no loss term; use int, union or jaccard (or none to disable)")


def project_to_budget(model: MultiDomainNet, budget: float, costs: Mapping[str, Tensor]) -> dict[str, int]:
    """Hard guarantee (ours): switch off each domain's lowest-latent switches until its binarised B_d <= budget.

    Returns how many switches were turned off per domain, so a report can say how much the projection did.
    """
    convs = model.switched_convs()
    names = list(convs)
    turned_off = {}
    for domain in model.domains:
        masks = {n: convs[n].hard_mask(domain) for n in names}
        excess = float(budget_usage({n: m.float() for n, m in masks.items()}, costs)) - budget
        turned_off[domain] = 0
        if excess <= 1e-12:
            continue
        latents = torch.cat([convs[n].latent[domain].detach() for n in names])
        cost = torch.cat([costs[n] for n in names])
        on = torch.cat([masks[n] for n in names])
        order = torch.argsort(torch.where(on, latents, torch.full_like(latents, float("inf"))))
        removed = torch.cumsum(cost[order], 0)
        count = int(torch.searchsorted(removed, torch.tensor(excess - 1e-12, device=removed.device)).item()) + 1
        flat_off = torch.zeros_like(on)
        flat_off[order[:count]] = True
        start = 0
        new_masks = {}
        for n in names:
            size = convs[n].in_channels
            new_masks[n] = masks[n] & ~flat_off[start:start + size]
            start += size
        model.set_masks({domain: new_masks})
        turned_off[domain] = count
    return turned_off
