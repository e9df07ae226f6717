"""One-file model format: the architecture as JSON plus tensors, loadable with ``torch.load(weights_only=True)``.

No pickled classes: a file saved by one version of the code loads in another as long as the architecture
description is understood, and loading never executes code from the file (timm's pruned-shapes idea).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from bap.models import MultiDomainNet, build_model
from bap.prune.materialize import apply_shapes, conv_shapes

FORMAT = "bap-sweeps/multi-domain-model"
VERSION = 1


def save(model: MultiDomainNet, path: str) -> None:
    """Write ``model`` (unpruned, pruned or single-domain) to ``path``; tensors are moved to CPU."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": json.dumps(model.arch, sort_keys=True),
        "shapes": json.dumps(conv_shapes(model), sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _read(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises different types for truncated zips, bad magic, pickled code
        raise ValueError(
            f"model file {path!r} is truncated, corrupted or not a bap model file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); save it again with bap.save"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"model file {path!r} is not a bap model file (format {found!r}, expected {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise ValueError(f"model file {path!r} has format version {payload.get('version')}; this bap reads {VERSION}")
    return payload


def load(path: str, map_location: str | torch.device = "cpu") -> MultiDomainNet:
    """Rebuild the model saved at ``path``: architecture from its JSON, weights strictly matched."""
    payload = _read(path)
    try:
        arch = json.loads(payload["arch"])
        shapes = json.loads(payload["shapes"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"model file {path!r} has an unreadable architecture description: {error}") from error
    model = build_model(
        arch["backbone"], arch["num_classes"], width=arch["width"], unswitched=arch["unswitched"],
        threshold=arch["threshold"], init=arch["init"],
    )
    apply_shapes(model, shapes)
    model.arch = arch
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise ValueError(f"model file {path!r} does not match its own architecture: {error}") from error
    model.freeze_shared()
    model.to(map_location)
    return model.eval() if arch.get("materialized") else model
