"""Backbone registry and the public ``build_model`` entry point."""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

from bap.models.multidomain import MultiDomainNet
from bap.models.resnet import BasicBlock, Bottleneck, ResNet

_REGISTRY: dict[str, Callable[[dict], MultiDomainNet]] = {}


def register_model(fn: Callable[[dict], MultiDomainNet]) -> Callable[[dict], MultiDomainNet]:
    """Make ``fn`` (arch dict -> model) a backbone under its function name: configs, validation and
    ``bap.load`` accept every registered name."""
    if fn.__name__ in _REGISTRY:
        warnings.warn(f"register_model: backbone {fn.__name__!r} was registered already; the new one replaces it",
                      stacklevel=2)
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


@register_model
def resnet26(arch: dict) -> MultiDomainNet:
    """Rebuffi et al.'s Decathlon ResNet-26: 3x3 stem 3->32, 3 stages x 4 BasicBlocks (64, 128, 256), each
    stage starting with stride 2; parameter-free shortcuts; BN + ReLU head. Input 64x64 (72 for some domains)."""
    arch.update(stem={"channels": 32, "kernel": 3, "stride": 1, "maxpool": False}, first_stride=2, head_bn=True)
    return ResNet(BasicBlock, [4, 4, 4], [64, 128, 256], arch)


@register_model
def resnet50(arch: dict) -> MultiDomainNet:
    """torchvision's ResNet-50 layout (V1.5 Bottleneck, 7x7 stride-2 stem + max-pool). Input 224x224."""
    arch.update(stem={"channels": 64, "kernel": 7, "stride": 2, "maxpool": True}, first_stride=1, head_bn=False)
    return ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], arch)


def build_model(
    backbone: str,
    num_classes: Mapping[str, int],
    width: float = 1.0,
    weights: str | None = None,
    *,
    unswitched: Sequence[str] = ("conv1",),
    threshold: float = 5e-3,
    init: float = 1e-2,
    source_domain: str | None = None,
) -> MultiDomainNet:
    """Build a multi-domain ``backbone`` serving ``num_classes`` (domain -> classes), shared convs frozen.

    ``weights`` is a local state-dict file of a single-domain backbone (torchvision's for resnet50, the project's
    own ``bap.pretrain`` output for resnet26); it is never downloaded. ``source_domain`` (the domain ``weights``
    was trained on) keeps the file's classifier as its head.
    """
    if backbone not in _REGISTRY:
        raise KeyError(f"backbone={backbone!r} is not registered; known: {', '.join(list_models())}")
    if not num_classes:
        raise ValueError("num_classes is empty; give at least one domain, e.g. {'digits': 10}")
    for domain, classes in num_classes.items():
        if "." in domain or not domain:
            raise ValueError(f"domain name {domain!r} must be non-empty and contain no '.'")
        if int(classes) < 1:
            raise ValueError(f"num_classes[{domain!r}]={classes} must be >= 1")
    if not width > 0:
        raise ValueError(f"width={width} must be > 0; use 1.0 for the paper's widths")
    arch = {
        "backbone": backbone,
        "num_classes": {d: int(c) for d, c in num_classes.items()},
        "width": float(width),
        "unswitched": list(unswitched),
        "threshold": float(threshold),
        "init": float(init),
    }
    model = _REGISTRY[backbone](arch)
    unknown = set(unswitched) - set(model.convs()) - {"*"}
    if unknown:
        raise ValueError(f"unswitched={sorted(unknown)} names no conv of {backbone}; its convs: "
                         f"{', '.join(model.convs())} ('conv1' is the stem, '*' every conv)")
    if weights is not None:
        from bap.models.weights import load_backbone_weights

        load_backbone_weights(model, weights, source_domain)
    elif source_domain is not None:
        raise ValueError(f"model.source_domain={source_domain!r} needs model.weights: its head comes from that file")
    model.freeze_shared()
    return model
