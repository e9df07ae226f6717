"""Base class of the multi-domain networks: shared frozen convs, per-domain switches, BN and heads."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from bap.layers import DomainBatchNorm2d, DomainHeads, SwitchedConv2d
from bap.layers.switched import binarize


class MultiDomainNet(nn.Module):
    """A backbone serving several domains; ``forward(x, domain)`` returns that domain's logits.

    Subclasses build their layers from ``SwitchedConv2d`` and ``DomainBatchNorm2d`` and list, per block, which
    convs consume an inner channel (so pruning can remove the producing filter) in ``inner_links``.
    """

    fc: DomainHeads

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        # Everything needed to rebuild this network from scratch (saved with the weights by bap.save).
        self.arch = dict(arch)
        self.domains: list[str] = list(arch["num_classes"])
        self.num_classes: dict[str, int] = dict(arch["num_classes"])

    # ---- switches -------------------------------------------------------------------------------------------
    def switched_convs(self) -> dict[str, SwitchedConv2d]:
        return {n: m for n, m in self.named_modules() if isinstance(m, SwitchedConv2d) and m.switched}

    def convs(self) -> dict[str, SwitchedConv2d]:
        return {n: m for n, m in self.named_modules() if isinstance(m, SwitchedConv2d)}

    def masks(self) -> dict[str, dict[str, Tensor]]:
        """domain -> switched conv name -> boolean mask over that conv's input channels."""
        convs = self.switched_convs()
        return {d: {name: conv.hard_mask(d) for name, conv in convs.items()} for d in self.domains}

    def flat_soft_masks(self, domains: Sequence[str]) -> Tensor:
        """Binarised masks of ``domains`` that carry straight-through gradients to the latent switches: one
        ``[D, C]`` tensor, columns in ``switched_convs()`` order, made in a few ops rather than a few per conv."""
        convs = list(self.switched_convs().values())
        latents = torch.stack([torch.cat([conv.latent[d] for conv in convs]) for d in domains])
        return binarize(latents, convs[0].threshold)

    def set_masks(self, masks: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Set the switches so that ``masks()`` equals ``masks`` (same structure; missing convs stay as they are)."""
        convs = self.switched_convs()
        init = float(self.arch.get("init", 1e-2))
        for domain, per_conv in masks.items():
            if domain not in self.domains:
                raise KeyError(f"domain {domain!r} is not in this model; its domains: {', '.join(self.domains)}")
            for name, mask in per_conv.items():
                if name not in convs:
                    raise KeyError(f"{name!r} is not a switched conv; known: {', '.join(convs)}")
                convs[name].set_mask(domain, torch.as_tensor(mask), init)

    def switch_parameters(self) -> Iterator[nn.Parameter]:
        for conv in self.switched_convs().values():
            if not conv.fixed:
                yield from conv.latent.parameters()

    def domain_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable per-domain weights: BatchNorm affine parameters and heads."""
        for module in self.modules():
            if isinstance(module, (DomainBatchNorm2d, DomainHeads)):
                yield from module.parameters()

    def freeze_shared(self) -> None:
        for conv in self.convs().values():
            conv.weight.requires_grad_(False)

    # ---- structure ------------------------------------------------------------------------------------------
    def inner_links(self) -> list[tuple[str, str, str]]:
        """(producer conv, its BN, consumer conv) for every channel that only one conv consumes."""
        raise NotImplementedError

    def forward_features(self, x: Tensor, domain: str) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, domain: str) -> Tensor:
        if domain not in self.num_classes:
            raise KeyError(f"domain {domain!r} is not served by this model; its domains: {', '.join(self.domains)}")
        return self.fc(self.forward_features(x, domain), domain)
