"""Budget accounting (METHOD 2, 3b property 1): what a switch costs, each domain's usage, the annealed target, and
the selection that keeps each domain's switches within it.

All functions take masks as ``{conv name: mask over input channels}`` so the same code scores soft (STE) masks
during training and hard masks in reports.

The budget (ours): each domain's switches are the top of its latent scores, filled in cost order up to a target
usage that anneals from 1 to beta (``budget_target``). After every optimizer step ``select_to_budget`` shifts each
domain's latents so that exactly that set lies above the threshold: the shift is the budget's multiplier, solved
exactly each step instead of by dual ascent, so B_d ends at beta (within one channel's cost), never below it, and
a switch turns off only to meet the budget.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from bap.counting import conv_output_sizes
from bap.layers import SwitchedConv2d
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


def budget_target(step: int, total_steps: int, beta: float, start: float, end: float) -> float:
    """Usage allowed after ``step`` of ``total_steps``: 1 until ``start`` (a fraction of training), then a cubic
    decay to ``beta`` at ``end`` (gradual pruning's schedule: fast while much is redundant), beta after that."""
    progress = step / total_steps
    if progress <= start:
        return 1.0
    if progress >= end:
        return beta
    remaining = 1.0 - (progress - start) / (end - start)
    return beta + (1.0 - beta) * remaining**3


def top_by_cost(scores: Tensor, cost: Tensor, budget: float) -> Tensor:
    """Boolean selection of the highest scores whose summed cost stays <= ``budget`` (ties: lower index first)."""
    order = torch.argsort(scores, descending=True, stable=True)
    filled = torch.cumsum(cost[order], 0)
    count = int(torch.searchsorted(filled, torch.tensor(budget, dtype=filled.dtype, device=filled.device),
                                   right=True).item())
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[:count]] = True
    return keep


# Both take the model's switched convs, found once by the caller: walking the module tree costs more than the
# selection's tensor work on these nets.
def _flat(convs: Sequence[SwitchedConv2d], domain: str) -> Tensor:
    return torch.cat([conv.latent[domain].detach() for conv in convs])


def _write_flat(convs: Sequence[SwitchedConv2d], domain: str, flat: Tensor) -> None:
    start = 0
    for conv in convs:
        size = conv.in_channels
        conv.latent[domain].copy_(flat[start:start + size])
        start += size


@torch.no_grad()
def select_to_budget(model: MultiDomainNet, targets: Mapping[str, float], costs: Mapping[str, Tensor]) -> None:
    """Make each domain's switches exactly its top latents within ``targets[domain]`` (cost-weighted).

    The latents move by one shift per domain (their order, and so Adam's state, is untouched): the cut between
    the lowest kept and the highest dropped latent lands on the threshold. When everything fits, the lowest latent
    is put where a fresh switch starts (``init``). Ties at the cut are then set on the right side of the threshold.
    """
    named = model.switched_convs()
    if not named:
        return
    convs = list(named.values())
    threshold = convs[0].threshold
    init = float(model.arch.get("init", 2 * threshold))
    cost = torch.cat([costs[n] for n in named])
    for domain, target in targets.items():
        z = _flat(convs, domain)
        keep = top_by_cost(z, cost, target)
        if bool(keep.all()):
            z = z - (z.min() - init)
        elif not bool(keep.any()):
            z = z - (z.max() - threshold)
        else:
            z = z - ((z[keep].min() + z[~keep].max()) / 2 - threshold)
            above = torch.nextafter(torch.tensor(threshold, dtype=z.dtype), torch.tensor(1.0, dtype=z.dtype))
            z = torch.where(keep & (z <= threshold), above.to(z.device), z)
            z = torch.where(~keep & (z > threshold), torch.full_like(z, threshold), z)
        _write_flat(convs, domain, z)


@torch.no_grad()
def project_to_budget(model: MultiDomainNet, budget: float, costs: Mapping[str, Tensor]) -> dict[str, int]:
    """Hard guarantee (ours): switch off each domain's lowest-latent switches until its binarised B_d <= budget.

    Only turns switches off. After a completed budget schedule it changes nothing; it acts when training ended
    before the schedule did. Returns how many switches were turned off per domain.
    """
    convs = model.switched_convs()
    if not convs:
        return {domain: 0 for domain in model.domains}
    names = list(convs)
    cost = torch.cat([costs[n] for n in names])
    turned_off = {}
    for domain in model.domains:
        on = torch.cat([convs[n].hard_mask(domain) for n in names])
        latents = torch.where(on, _flat(list(convs.values()), domain),
                              torch.full_like(cost, -torch.inf, dtype=torch.float32))
        keep = top_by_cost(latents, cost, budget) & on
        turned_off[domain] = int((on & ~keep).sum())
        if turned_off[domain]:
            start, new_masks = 0, {}
            for n in names:
                new_masks[n] = keep[start:start + convs[n].in_channels]
                start += convs[n].in_channels
            model.set_masks({domain: new_masks})
    return turned_off


def usage_summary(domain_masks: Mapping[str, Masks], costs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hard-mask summary: each domain's usage B_d, the union U (cost used by any domain) and the overlap
    ``sum_d B_d / U``: the mean number of domains per used unit of cost (1: nothing shared, D: all shared)."""
    usage = {d: budget_usage({n: m.float() for n, m in masks.items()}, costs) for d, masks in domain_masks.items()}
    union = 0.0
    for name, cost in costs.items():
        used = torch.stack([masks[name].bool() for masks in domain_masks.values()]).any(0)
        union = union + (cost * used).sum()
    union = torch.as_tensor(union, dtype=torch.float64)
    overlap = sum(usage.values()) / union if float(union) > 0 else torch.zeros((), dtype=torch.float64)
    return {"usage": usage, "union": union, "overlap": overlap}


@torch.no_grad()
def order_latents(model: MultiDomainNet, scores: Mapping[str, Tensor], spread: float) -> None:
    """Start each domain's latents in the order of ``scores[domain]`` (one per switch, model order): the switch
    ranked r of n gets ``init + spread * r / (n - 1)``, so every switch starts on and the anneal turns the lowest
    ranked off first. With ``spread`` 0 all start at ``init`` (ties then fall in index order)."""
    named = model.switched_convs()
    if not named:
        return
    convs = list(named.values())
    init = float(model.arch.get("init", 2 * convs[0].threshold))
    for domain, domain_scores in scores.items():
        order = torch.argsort(domain_scores, stable=True)
        rank = torch.empty(len(order), dtype=torch.float64)
        rank[order] = torch.arange(len(order), dtype=torch.float64) / max(len(order) - 1, 1)
        _write_flat(convs, domain, (init + spread * rank).to(convs[0].latent[domain].device))
