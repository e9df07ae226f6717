"""Pretrained single-domain weights, from a local file only, into a multi-domain network.

The file is a plain state dict in torchvision's key layout (``layer1.0.bn1.weight``); every domain's BN
starts from the single BN it holds. Classifier weights (``fc.*``) are ignored: each domain gets a new head.
"""

from __future__ import annotations

import os

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


def load_backbone_weights(model: MultiDomainNet, path: str) -> None:
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

    convs = model.convs()
    with torch.no_grad():
        for name, conv in convs.items():
            conv.weight.copy_(state[f"{name}.weight"])
        for name, module in model.named_modules():
            if isinstance(module, DomainBatchNorm2d):
                bn_state = {k.split(".")[-1]: v for k, v in state.items() if k.rsplit(".", 1)[0] == name}
                for bn in module.bns.values():
                    bn.load_state_dict(bn_state)
