"""BAP's parameter-sharing losses (METHOD 3, 3b property 2): terms in [0, 1] that are small when domains use the
same channels.

All functions take masks as ``{conv name: mask over input channels}`` (or one flat ``[D, C]`` tensor in the
trainer's layout) so the same code scores soft (STE) masks during training and hard masks in reports. The costs
come from ``bap.budget.switch_costs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from bap.config import SHARING_LOSSES

Masks = Mapping[str, Tensor]

SHARING_NORMALIZATIONS = ("layer", "cost")


@dataclass(frozen=True)
class CostLayout:
    """The switches' costs laid out for the sharing loss, once per model: every switch in ``costs`` order (the
    model's switched-conv order), its weight (its cost over its layer's total with ``normalize="layer"``, over the
    network's with ``"cost"``) and its layer's index (all 0 with ``"cost"``: one layer)."""

    weight: Tensor  # [C]
    layer: Tensor  # [C], long
    layers: int


def cost_layout(costs: Mapping[str, Tensor], normalize: str = "layer") -> CostLayout:
    if normalize not in SHARING_NORMALIZATIONS:
        raise ValueError(f"sharing.normalize={normalize!r} is not supported; use layer or cost")
    names = list(costs)
    if normalize == "cost":
        weight = torch.cat([costs[n] for n in names])
        return CostLayout(weight / weight.sum(), torch.zeros_like(weight, dtype=torch.long), 1)
    weight = torch.cat([costs[n] / costs[n].sum() for n in names])
    sizes = torch.tensor([len(costs[n]) for n in names], device=weight.device)
    return CostLayout(weight, torch.repeat_interleave(torch.arange(len(names), device=weight.device), sizes),
                      len(names))


def stack_masks(domain_masks: Sequence[Masks], costs: Mapping[str, Tensor]) -> Tensor:
    """Per-domain ``{conv: mask}`` as one ``[D, C]`` tensor, columns in ``costs`` order (``CostLayout``'s)."""
    return torch.stack([torch.cat([masks[n] for n in costs]) for masks in domain_masks])


def _pairwise_mean(matrix: Tensor) -> Tensor:
    """Mean of the off-diagonal entries of symmetric ``[..., D, D]`` matrices (the mean over pairs d < e)."""
    d = matrix.shape[-1]
    return (matrix.sum((-2, -1)) - matrix.diagonal(dim1=-2, dim2=-1).sum(-1)) / (d * (d - 1))


def _per_layer(values: Tensor, layout: CostLayout) -> Tensor:
    """Sums of ``values[C, ...]`` within each layer: ``[L, ...]``."""
    return values.new_zeros((layout.layers, *values.shape[1:])).index_add(0, layout.layer, values)


def flat_sharing_loss(kind: str, m: Tensor, layout: CostLayout, *, q: float = 0.5, eps: float = 1e-8) -> Tensor:
    """The sharing loss of masks ``m[D, C]`` (``layout``'s columns): each layer's loss, with its weights summing to
    1, averaged over layers; 0 when all domains agree. The same few ops for any number of layers: terms linear in
    the weights are summed over the whole vector at once, the others (jaccard's) per layer by an index sum."""
    d, w, layers = m.shape[0], layout.weight.to(m.dtype), layout.layers
    if kind == "int":  # pairwise co-use reward: every other user of a channel adds to its pull
        return 1 - _pairwise_mean((m * w) @ m.T) / layers
    if kind == "union":  # concave cost in the number of users: a private channel costs most, every user feels it
        users = m.sum(0)
        return (w * (1 - (1 - q) ** users)).sum() / (1 - (1 - q) ** d) / layers
    if kind == "jaccard":  # mean pairwise Tanimoto of the cost-weighted masks: scale-free in the budget level
        inter = _per_layer(w[:, None, None] * m.T[:, :, None] * m.T[:, None, :], layout)  # [L, D, D]
        size = inter.diagonal(dim1=-2, dim2=-1)
        union = size[:, :, None] + size[:, None, :] - inter
        return 1 - _pairwise_mean(inter / (union + eps)).mean()
    if kind == "consensus":  # cost-weighted variance across domains, scaled to [0, 1]
        return (w * ((m - m.mean(0)) ** 2).sum(0)).sum() / (d / 4) / layers
    intersection = w * m.prod(0)
    union = w * (1 - (1 - m).prod(0))
    if kind == "int_dway":
        return 1 - intersection.sum() / layers
    if kind == "union_dway":
        return union.sum() / layers
    if kind == "jaccard_dway":
        return 1 - (_per_layer(intersection, layout) / (_per_layer(union, layout) + eps)).mean()
    raise ValueError(f"sharing.loss={kind!r} has no loss term; use one of {', '.join(SHARING_LOSSES)}")


def sharing_loss(
    kind: str,
    domain_masks: Sequence[Masks],
    costs: Mapping[str, Tensor],
    *,
    normalize: str = "layer",
    q: float = 0.5,
    eps: float = 1e-8,
) -> Tensor:
    """BAP's sharing term over ``domain_masks`` (one mapping per domain), in [0, 1], small when domains use the
    same channels. The names are the papers'; these forms are ours (METHOD 3b).

    ``normalize="layer"``: the loss of every layer with its costs scaled to sum to 1, averaged over layers, so
    early layers (small per-channel costs) feel the same pressure as late ones; ``"cost"``: one loss over the
    whole network in the budget's unit. ``q`` shapes the concave ``union`` cost (small q: closer to linear).
    The trainer calls ``flat_sharing_loss`` with the masks and layout it keeps flat.
    """
    if len(domain_masks) < 2:
        raise ValueError("a sharing loss needs at least two domains; use sharing.loss=none for one")
    layout = cost_layout(costs, normalize)
    return flat_sharing_loss(kind, stack_masks(domain_masks, costs), layout, q=q, eps=eps)
