"""Pretrained single-domain weights, from a local file only, into a multi-domain network.

The file is a plain state dict in torchvision's key layout (``layer1.0.bn1.weight``); every domain's BN
starts from the single BN it holds. Classifier weights (``fc.*``) go to the head of ``source_domain`` (the domain
the backbone was pretrained on, e.g. Decathlon's imagenet12) when it is among the model's domains; every other
domain gets a new head.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor

from bap.layers import DomainBatchNorm2d
from bap.models.multidomain import MultiDomainNet

_HEAD_PREFIXES = ("fc.",)


def single_domain_state_dict(model: MultiDomainNet, domain: str) -> dict[str, Tensor]:
    """The backbone as one domain sees it, in torchvision's key layout (what ``build_model(weights=...)`` loads)."""
    state = {}
    for name, conv in model.convs().items():
        state[f"{name}.weight"] = conv.weight.detach().clone()
    for name, module in model.named_modules():
        if isinstance(module, DomainBatchNorm2d):
            for key, value in module.bns[domain].state_dict().items():
                state[f"{name}.{key}"] = value.detach().clone()
    head = model.fc.heads[domain]
    state["fc.weight"], state["fc.bias"] = head.weight.detach().clone(), head.bias.detach().clone()
    return state


def load_backbone_weights(model: MultiDomainNet, path: str, source_domain: str | None = None) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights={path!r} does not exist; give a local state-dict file (no downloads)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or pickled-code files
        raise ValueError(f"weights={path!r} is not a loadable state dict: {error}") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights={path!r} holds a {type(state).__name__}, expected a state dict")

    expected = single_domain_state_dict(model, model.domains[0])
    wanted = {k for k in expected if not k.startswith(_HEAD_PREFIXES)}
    given = {k for k in state if not k.startswith(_HEAD_PREFIXES)}
    missing, unexpected = sorted(wanted - given), sorted(given - wanted)
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(wanted & given)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        arch = model.arch
        raise ValueError(
            f"weights={path!r} does not match {arch['backbone']} at width {arch['width']}: "
            f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, "
            f"shape mismatches {wrong_shape[:8]}; check the backbone and width the file was trained with"
        )

    if source_domain not in model.domains:  # a domain set without the source: every head is new
        source_domain = None
    if source_domain is not None:
        head = model.fc.heads[source_domain]
        shape = tuple(state["fc.weight"].shape) if "fc.weight" in state else None
        if shape != tuple(head.weight.shape) or "fc.bias" not in state:
            raise ValueError(f"weights={path!r} has classifier fc.weight of shape {shape}, but source domain "
                             f"{source_domain!r} needs {tuple(head.weight.shape)}; pretrain on that domain's classes "
                             "or leave model.source_domain unset for a new head")

    convs = model.convs()
    with torch.no_grad():
        if source_domain is not None:
            model.fc.heads[source_domain].weight.copy_(state["fc.weight"])
            model.fc.heads[source_domain].bias.copy_(state["fc.bias"])
        for name, conv in convs.items():
            conv.weight.copy_(state[f"{name}.weight"])
        for name, module in model.named_modules():
            if isinstance(module, DomainBatchNorm2d):
                bn_state = {k.split(".")[-1]: v for k, v in state.items() if k.rsplit(".", 1)[0] == name}
                for bn in module.bns.values():
                    bn.load_state_dict(bn_state)


# Rebuffi et al.'s residual_adapters ResNet-26 -> this project's keys (task index t of a multi-task checkpoint).
_REBUFFI_KEYS = (
    (r"pre_layers_conv\.conv\.weight", "conv1.weight"),
    (r"pre_layers_conv\.bns\.{t}\.(\w+)", r"bn1.\1"),
    (r"(layer\d\.\d+)\.conv1\.conv\.weight", r"\1.conv1.weight"),
    (r"(layer\d\.\d+)\.conv1\.bns\.{t}\.(\w+)", r"\1.bn1.\2"),
    (r"(layer\d\.\d+)\.conv2\.1\.conv\.weight", r"\1.conv2.weight"),
    (r"(layer\d\.\d+)\.conv2\.1\.bns\.{t}\.(\w+)", r"\1.bn2.\2"),
    (r"end_bns\.{t}\.0\.(\w+)", r"head_bn.\1"),
    (r"linears\.{t}\.(weight|bias)", r"fc.\1"),
)


def convert_rebuffi_state_dict(state: dict[str, Tensor], task: int = 0) -> dict[str, Tensor]:
    """A residual_adapters ResNet-26 state dict (``net.state_dict()`` of Rebuffi et al.'s released model, loaded
    with their code) in this project's key layout, keeping task ``task``'s BNs and classifier (0: imagenet12 in
    their Decathlon checkpoints). Other tasks' BNs and classifiers and parallel adapters (``parallel_conv``) have
    no counterpart here and are dropped; any other key (series adapters, another architecture) is an error."""
    patterns = [(re.compile(src.format(t=task) + "$"), dst) for src, dst in _REBUFFI_KEYS]
    converted, unknown = {}, []
    for key, value in state.items():
        for pattern, dst in patterns:
            if pattern.match(key):
                converted[pattern.sub(dst, key)] = value
                break
        else:
            other_task = re.search(r"(bns|linears)\.(\d+)\.", key)
            if "parallel_conv" not in key and not (other_task and int(other_task[2]) != task):
                unknown.append(key)
    if unknown:
        raise ValueError(f"not a residual_adapters ResNet-26 state dict: unknown keys {unknown[:8]}")
    return converted
