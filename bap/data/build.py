"""Entry points that dispatch on `data.name` to the embedded, Decathlon or ImageNet-to-Sketch module.

Each of those modules offers the same four functions: `list_domains(cfg)`; `prepare(cfg, domains)`, every up-front
check, returning what `build` needs per domain; `build(cfg, domain, prepared)`; and `build_source(cfg)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bap.config import DataConfig
from bap.data.domain import DomainData

# Imported on first use: the file readers pull in torchvision's transforms (and with them torch._dynamo, ~1 s),
# which a worker training on the embedded data never needs.
_DATASETS: dict[str, str] = {
    "embedded": "bap.data.embedded", "decathlon": "bap.data.decathlon", "imagenet_sketch": "bap.data.imagefolder",
}


def _module(cfg: DataConfig) -> ModuleType:
    if cfg.name not in _DATASETS:
        raise ValueError(f"data.name={cfg.name!r} is not supported; use one of: {', '.join(_DATASETS)}")
    return importlib.import_module(_DATASETS[cfg.name])


def list_domains(cfg: DataConfig) -> list[str]:
    """Target domains of `data.name` (no disk access); `build_domains` uses them when `data.domains` is unset."""
    return _module(cfg).list_domains(cfg)


def check_domains(cfg: DataConfig, domains: list[str]) -> None:
    """Every up-front check `build_domains` makes for `domains` (roots, annotation files and their contents,
    image paths and headers, class sets), without building the data sets: what a sweep's dry run can check on
    the driver before any trial starts. Raises the same errors, naming the file, domain and fix."""
    _module(cfg).prepare(cfg, list(domains))


def build_domains(cfg: DataConfig) -> dict[str, DomainData]:
    """`data.domains` (or every target domain), in that order.

    Everything checkable is validated for *all* domains before any data set object is returned: roots, split
    folders/annotation files, unknown domains, missing images, class sets of train vs val, image headers
    (all of them up to `images.HEADER_CHECK_LIMIT` per split, an even sample beyond). A file that passes the
    header check but fails to decode raises at load time, naming the file and domain.
    """
    module = _module(cfg)
    domains = list(cfg.domains) if cfg.domains is not None else module.list_domains(cfg)
    prepared = module.prepare(cfg, domains)
    return {domain: module.build(cfg, domain, prepared[domain]) for domain in domains}


def build_source(cfg: DataConfig) -> DomainData:
    """The domain a backbone is pretrained on: embedded -> `shapes`; decathlon -> `imagenet12`;
    imagenet_sketch -> the first of `data.domains` (required, e.g. an `imagenet/` ImageFolder under the root)."""
    return _module(cfg).build_source(cfg)
