"""One-file model format: the architecture as JSON plus tensors, loadable with ``torch.load(weights_only=True)``.

No pickled classes: a file saved by one version of the code loads in another as long as the architecture
description is understood, and loading never executes code from the file (timm's pruned-shapes idea).

A file is untrusted input: it carries a SHA-256 digest of its tensors (names, dtypes, shapes, bytes) that ``load``
checks, and its architecture description must agree with the tensors it holds (stem width, heads) before anything
is allocated from it. Every problem raises ``ModelFileError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import torch
from torch import Tensor

from bap.atomic import atomic_path
from bap.models import MultiDomainNet, build_model, list_models
from bap.models.resnet import scaled
from bap.prune.materialize import apply_shapes, conv_shapes

FORMAT = "bap-sweeps/multi-domain-model"
VERSION = 2  # 2: a digest of the tensors
# Stem output channels at width 1: conv1 is never pruned, so its weight tells the width the file really holds.
_STEM_CHANNELS = {"resnet26": 32, "resnet50": 64}


class ModelFileError(ValueError):
    """A model file that cannot be loaded: missing pieces, a wrong digest, or a description its tensors contradict."""


def tensor_digest(state_dict: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save(model: MultiDomainNet, path: str) -> None:
    """Write ``model`` (unpruned, pruned or single-domain) to ``path``; tensors are moved to CPU."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": json.dumps(model.arch, sort_keys=True),
        "shapes": json.dumps(conv_shapes(model), sort_keys=True),
        "state_dict": state,
        "sha256": tensor_digest(state),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _read(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises different types for truncated zips, bad magic, pickled code
        raise ModelFileError(
            f"model file {path!r} is truncated, corrupted or not a bap model file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); save it again with bap.save"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"model file {path!r} is not a bap model file (format {found!r}, expected {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise ModelFileError(f"model file {path!r} has format version {payload.get('version')}; this bap reads "
                             f"{VERSION} (files of version 1 carry no digest: load them with the bap that wrote "
                             "them and save again)")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(f"model file {path!r} has no tensor state_dict")
    if payload.get("sha256") != tensor_digest(state):
        raise ModelFileError(f"model file {path!r} fails its SHA-256 check: its tensors were changed or damaged "
                             "after bap.save wrote it")
    return payload


def _checked_arch(path: str, payload: Mapping[str, Any]) -> tuple[dict, dict]:
    """The architecture description, checked against the tensors before anything is built from it."""
    try:
        arch, shapes = json.loads(payload["arch"]), json.loads(payload["shapes"])
        missing = sorted({"backbone", "width", "num_classes", "unswitched", "threshold", "init"} - set(arch))
        if missing:
            raise KeyError(f"missing {missing}")
        backbone, width, heads = arch["backbone"], float(arch["width"]), dict(arch["num_classes"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelFileError(f"model file {path!r} has an unreadable architecture description: {error!r}") from error
    state = payload["state_dict"]
    if backbone not in list_models():
        raise ModelFileError(f"model file {path!r} names backbone {backbone!r}; known: {', '.join(list_models())}")
    stem = state.get("conv1.weight")
    expected = scaled(_STEM_CHANNELS[backbone], width) if backbone in _STEM_CHANNELS and width > 0 else None
    if stem is None or stem.dim() != 4 or stem.shape[0] != expected:
        raise ModelFileError(f"model file {path!r} describes {backbone} at width {width:g}, which its stem tensor "
                             f"{None if stem is None else tuple(stem.shape)} contradicts")
    for domain, classes in heads.items():
        head = state.get(f"fc.heads.{domain}.weight")
        if head is None or head.shape[0] != classes:
            raise ModelFileError(f"model file {path!r} describes domain {domain!r} with {classes} classes, which its "
                                 f"head tensor {None if head is None else tuple(head.shape)} contradicts")
    for name, shape in shapes.items():  # every size apply_shapes will allocate, against the tensor that fills it
        if not isinstance(shape, dict):
            raise ModelFileError(f"model file {path!r}: shape entry {name!r} is not a mapping")
        if shape.get("kind") == "conv":
            weight = state.get(f"{name}.weight")
            ok = weight is not None and weight.dim() == 4 and tuple(weight.shape[:2]) == (shape.get("out"), shape.get("in"))
            index = state.get(f"{name}.in_index")
            ok = ok and (shape.get("in_index") is None or (index is not None and index.numel() == shape["in_index"]))
        else:
            bn = next((v for k, v in state.items() if k.startswith(f"{name}.bns.") and k.endswith(".running_mean")), None)
            ok = bn is not None and bn.shape[0] == shape.get("channels")
        if not ok:
            raise ModelFileError(f"model file {path!r}: the shape it describes for {name!r} ({shape}) does not match "
                                 "its tensors")
    return arch, shapes


def load(path: str, map_location: str | torch.device = "cpu") -> MultiDomainNet:
    """Rebuild the model saved at ``path``: digest checked, architecture checked against the tensors, weights
    strictly matched. Raises ``ModelFileError`` (or FileNotFoundError) naming the file."""
    payload = _read(path)
    arch, shapes = _checked_arch(path, payload)
    model = build_model(
        arch["backbone"], arch["num_classes"], width=arch["width"], unswitched=arch["unswitched"],
        threshold=arch["threshold"], init=arch["init"],
    )
    apply_shapes(model, shapes)
    model.arch = arch
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise ModelFileError(f"model file {path!r} does not match its own architecture: {error}") from error
    model.freeze_shared()
    model.to(map_location)
    return model.eval() if arch.get("materialized") else model
