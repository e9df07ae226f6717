"""Exact parameter, switch and MAC counts of multi-domain networks (METHOD 5).

Pure functions of a module's shapes. MACs are those of the module as it executes: a conv costs
``C_out * C_in_kept * k^2 * H_out * W_out`` and a head ``in * out``, so for a materialized model they shrink with
the kept shapes and agree with ``torch.utils.flop_counter.FlopCounterMode`` (which reports FLOPs = 2 x MACs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

import torch
from torch import nn

from bap.layers import SwitchedConv2d
from bap.models.multidomain import MultiDomainNet

InputSize = Union[tuple[int, int], Mapping[str, tuple[int, int]]]


@dataclass(frozen=True)
class Counts:
    params: int  # float parameters needed to serve every domain: conv weights, BN affine, heads
    conv_params: int  # shared conv weights
    switches: int  # switch bits (one per input channel, switched conv and domain), counted apart
    macs: dict[str, int] = field(default_factory=dict)  # one image of each domain at its input size
    macs_mean: float = 0.0


def _switch_parameter_ids(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, SwitchedConv2d) and m.switched and not m.fixed
            for p in m.latent.parameters()}


def count_params(model: nn.Module) -> int:
    """Float parameters, latent switches excluded (they are stored as bits once binarised)."""
    switches = _switch_parameter_ids(model)
    return sum(p.numel() for p in model.parameters() if id(p) not in switches)


def count_conv_params(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, SwitchedConv2d))


def count_switches(model: nn.Module) -> int:
    return sum(m.in_channels * len(m.domains) for m in model.modules() if isinstance(m, SwitchedConv2d) and m.switched)


def input_size_of(input_size: InputSize, domain: str) -> tuple[int, int]:
    if isinstance(input_size, Mapping):
        if domain not in input_size:
            raise KeyError(f"input_size has no entry for domain {domain!r}; give one (H, W) per domain")
        return tuple(input_size[domain])  # type: ignore[return-value]
    return tuple(input_size)  # type: ignore[return-value]


@torch.no_grad()
def conv_output_sizes(model: MultiDomainNet, domain: str, input_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Spatial output size of every conv for one image of ``domain``, traced with a forward pass on zeros."""
    sizes: dict[str, tuple[int, int]] = {}
    handles = [
        conv.register_forward_hook(lambda mod, inp, out, name=name: sizes.__setitem__(name, tuple(out.shape[-2:])))
        for name, conv in model.convs().items()
    ]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(1, 3, *input_size, device=param.device, dtype=param.dtype), domain)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sizes


def count_macs(model: MultiDomainNet, input_size: tuple[int, int], domain: str) -> int:
    sizes = conv_output_sizes(model, domain, input_size)
    macs = 0
    for name, conv in model.convs().items():
        h, w = sizes[name]
        macs += conv.out_channels * conv.in_channels * conv.kernel_size**2 * h * w
    head = model.fc.heads[domain]
    return macs + head.in_features * head.out_features


def count(model: MultiDomainNet, input_size: InputSize) -> Counts:
    """Counts of ``model`` serving all its domains; ``input_size`` is one (H, W) or a mapping domain -> (H, W)."""
    return _counts(model, {d: count_macs(model, input_size_of(input_size, d), d) for d in model.domains})


def reference_counts(model: MultiDomainNet, input_size: InputSize) -> Counts:
    """Counts of the single-domain backbone ``model`` was built from: all convs, one BN set and one head with the
    mean class count of ``model``'s domains. Ratios against it say how the whole multi-domain model compares
    with the one network a single domain would need."""
    from bap.models import build_model

    arch = model.arch
    classes = max(1, round(sum(arch["num_classes"].values()) / len(arch["num_classes"])))
    reference = build_model(arch["backbone"], {"reference": classes}, width=arch["width"], unswitched=arch["unswitched"])
    return _counts(reference, {d: count_macs(reference, input_size_of(input_size, d), "reference")
                               for d in model.domains})


def _counts(model: MultiDomainNet, macs: dict[str, int]) -> Counts:
    return Counts(params=count_params(model), conv_params=count_conv_params(model), switches=count_switches(model),
                  macs=macs, macs_mean=sum(macs.values()) / len(macs))
