"""Physical pruning: a real, smaller multi-domain module that computes what the masked one computes (METHOD 4).

Plan, then cut. The plan keeps, for every switched conv, the input channels some domain uses (the union).
A channel that only one conv consumes (the inner channel of a block) is removed together with the filter
that produces it and that channel of every domain's BN: most savings come from there. Residual-stream
channels also feed the shortcut, so they stay and their consumers gather the kept inputs instead.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import Tensor, nn

from bap.layers import DomainBatchNorm2d, SwitchedConv2d
from bap.models.multidomain import MultiDomainNet


def union_masks(masks: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """u_{l,c} = OR_d m_{d,l,c}."""
    union: dict[str, Tensor] = {}
    for per_conv in masks.values():
        for name, mask in per_conv.items():
            union[name] = union[name] | mask if name in union else mask.clone()
    return union


def plan_keep(model: MultiDomainNet, masks: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Indices of the input channels each switched conv keeps (relative to its current inputs)."""
    return {name: torch.nonzero(u, as_tuple=False).flatten() for name, u in union_masks(masks).items()}


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module) if not child.isdigit() else parent._modules.__setitem__(child, module)


def _sliced_conv(
    conv: SwitchedConv2d,
    keep_in: Tensor | None,
    keep_out: Tensor | None,
    gather: bool,
    masks: Mapping[str, Tensor] | None,
    domains: list[str],
) -> SwitchedConv2d:
    """A fixed-switch copy of ``conv`` with only the kept inputs (gathered or already compacted) and filters."""
    weight = conv.weight.detach()
    if keep_out is not None:
        weight = weight.index_select(0, keep_out)
    in_index = conv.in_index
    if keep_in is not None:
        weight = weight.index_select(1, keep_in)
        # keep_in is sorted and unique, so keeping every input needs no gather.
        if gather and keep_in.numel() != conv.in_channels:
            in_index = keep_in if in_index is None else in_index.index_select(0, keep_in)
    if masks is not None and keep_in is not None:
        masks = {d: masks[d].index_select(0, keep_in) for d in domains}
    # Switches every domain keeps on over the kept inputs select nothing: drop them (no mask to apply).
    switched = conv.switched and masks is not None and not all(bool(masks[d].all()) for d in domains)
    new = SwitchedConv2d(
        weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
        domains=domains if switched else (), switched=switched, threshold=conv.threshold, fixed=True,
        in_index=in_index,
    ).to(weight.device)
    with torch.no_grad():
        new.weight = nn.Parameter(weight.clone(), requires_grad=False)
    if switched:
        for domain in domains:
            new.set_mask(domain, masks[domain], init=0.0)
    return new


def _sliced_bn(bn: DomainBatchNorm2d, keep: Tensor, domains: list[str]) -> DomainBatchNorm2d:
    new = DomainBatchNorm2d(int(keep.numel()), domains).to(keep.device)
    with torch.no_grad():
        for domain in domains:
            old, target = bn.bns[domain], new.bns[domain]
            target.weight.copy_(old.weight.index_select(0, keep))
            target.bias.copy_(old.bias.index_select(0, keep))
            target.running_mean.copy_(old.running_mean.index_select(0, keep))
            target.running_var.copy_(old.running_var.index_select(0, keep))
            target.num_batches_tracked.copy_(old.num_batches_tracked)
            target.eps, target.momentum = old.eps, old.momentum
    return new


def _restrict_domains(model: MultiDomainNet, domains: list[str]) -> None:
    """Drop every other domain's BN and head from ``model`` (in place)."""
    for module in model.modules():
        if isinstance(module, DomainBatchNorm2d):
            for d in list(module.bns):
                if d not in domains:
                    del module.bns[d]
    for d in list(model.fc.heads):
        if d not in domains:
            del model.fc.heads[d]
    model.domains = list(domains)
    model.num_classes = {d: model.num_classes[d] for d in domains}
    model.arch["num_classes"] = dict(model.num_classes)


@torch.no_grad()
def materialize(model: MultiDomainNet, domain: str | None = None) -> MultiDomainNet:
    """The smallest module that serves every domain (``domain=None``) or only ``domain``, with the same
    ``forward(x, domain)`` and the same logits as the masked ``model`` in eval mode. ``model`` is not changed.

    Each domain keeps its own mask over the kept (union) channels, as fixed boolean buffers.
    """
    if domain is not None and domain not in model.domains:
        raise KeyError(f"domain={domain!r} is not served by this model; its domains: {', '.join(model.domains)}")
    domains = [domain] if domain is not None else list(model.domains)
    masks = {d: m for d, m in model.masks().items() if d in domains}
    keep = plan_keep(model, masks)

    pruned = copy.deepcopy(model)
    _restrict_domains(pruned, domains)
    convs = model.convs()
    inner = {consumer: (producer, bn) for producer, bn, consumer in model.inner_links()}
    keep_out: dict[str, Tensor] = {}
    for consumer, (producer, bn) in inner.items():
        if consumer in keep:
            keep_out[producer] = keep[consumer]
            _replace(pruned, bn, _sliced_bn(model.get_submodule(bn), keep[consumer], domains))

    for name, conv in convs.items():
        per_domain = {d: masks[d][name] for d in domains} if name in keep else None
        _replace(pruned, name, _sliced_conv(
            conv, keep.get(name), keep_out.get(name), gather=name not in inner, masks=per_domain, domains=domains,
        ))
    pruned.arch["materialized"] = True
    return pruned.eval()


def conv_shapes(model: MultiDomainNet) -> dict[str, dict]:
    """Each conv's kept shape and each BN's width: the architecture of a (pruned) model as data."""
    shapes: dict[str, dict] = {}
    for name, module in model.named_modules():
        if isinstance(module, SwitchedConv2d):
            shapes[name] = {
                "kind": "conv", "out": module.out_channels, "in": module.in_channels,
                "in_index": None if module.in_index is None else int(module.in_index.numel()),
                "switched": module.switched, "fixed": module.fixed,
            }
        elif isinstance(module, DomainBatchNorm2d):
            shapes[name] = {"kind": "bn", "channels": module.num_features}
    return shapes


def apply_shapes(model: MultiDomainNet, shapes: Mapping[str, Mapping]) -> None:
    """Resize ``model``'s convs and BNs (in place, fresh tensors) to ``shapes`` so a pruned state dict loads."""
    for name, shape in shapes.items():
        old = model.get_submodule(name)
        if shape["kind"] == "conv":
            n_index = shape["in_index"]
            conv = SwitchedConv2d(
                shape["in"], shape["out"], old.kernel_size, old.stride, old.padding,
                domains=model.domains if shape["switched"] else (), switched=shape["switched"],
                threshold=old.threshold, fixed=shape["fixed"],
                in_index=None if n_index is None else torch.zeros(n_index, dtype=torch.long),
            )
            _replace(model, name, conv)
        elif shape["channels"] != old.num_features:
            _replace(model, name, DomainBatchNorm2d(shape["channels"], model.domains))
