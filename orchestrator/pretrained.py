"""Pretrained backbones for a sweep, as bytes the driver ships to every worker.

``model.weights=embedded`` pretrains the backbone on the embedded data's source domain once per
(backbone, width, image size, seed) and caches it, so the default sweep starts from a real pretrained
network without any download. A path (``{backbone}`` filled in per backbone) is read on the driver. Either way
the bytes travel through Ray's object store: workers on other machines need no copy of the file. ``data.seed``
draws both the images and the pretraining's own seed, so one value is one draw of data and backbone (METHOD 10).
A sweep pretrains as a Ray task with a trial's resources (``in_ray``), inside Ray's CPU accounting: the driver's machine may have no
CPUs to spare (the compose stack's ``sweep`` container joins as a node without any).
"""

from __future__ import annotations

import logging
import os

from bap import PretrainConfig, pretrain
from bap.atomic import atomic_path
from bap.data import build_source
from orchestrator.config import EMBEDDED_WEIGHTS, SweepConfig, SweepPlan, weights_path

log = logging.getLogger(__name__)
CACHE_DIR = os.environ.get("BAP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "bap-sweeps"))


def embedded_backbone_path(backbone: str, cfg: SweepConfig) -> str:
    d = cfg.data
    name = f"{backbone}_w{cfg.model.width:g}_px{d.image_size}_n{d.source_train_per_class}_seed{d.seed}.pt"
    return os.path.join(CACHE_DIR, name)


def _pretrained(backbone: str, cfg: SweepConfig) -> bytes:
    """Pretrain ``backbone`` into this node's cache (unless it is there) and return the file's bytes."""
    path = embedded_backbone_path(backbone, cfg)
    if not os.path.isfile(path):
        pretrain(PretrainConfig(backbone=backbone, width=cfg.model.width, device=cfg.train.device,
                                seed=cfg.data.seed),
                 build_source(cfg.data), path, progress=True)
    with open(path, "rb") as f:
        return f.read()


def backbone_weights(plan: SweepPlan, in_ray: bool = False) -> dict[str, bytes]:
    """backbone -> state-dict bytes for every backbone of the sweep ({} when no weights are configured); with
    ``in_ray`` a pretraining runs as a Ray task with a trial's CPUs and GPUs, and its file joins the driver's cache."""
    cfg = plan.cfg
    if cfg.model.weights is None:
        return {}
    blobs = {}
    for backbone in plan.backbones:
        path = weights_path(cfg.model.weights, backbone)
        if path == EMBEDDED_WEIGHTS:
            path = embedded_backbone_path(backbone, cfg)
            if not os.path.isfile(path):
                log.info("pretraining %s (width %g) on the embedded source domain -> %s%s", backbone,
                         cfg.model.width, path, " (as a Ray task)" if in_ray else "")
                if in_ray:
                    import ray

                    task = ray.remote(_pretrained).options(num_cpus=cfg.ray.cpus_per_trial,
                                                           num_gpus=cfg.ray.gpus_per_trial)
                    blob = ray.get(task.remote(backbone, cfg))
                    with atomic_path(path) as tmp, open(tmp, "wb") as f:
                        f.write(blob)
                else:
                    _pretrained(backbone, cfg)
        with open(path, "rb") as f:
            blobs[backbone] = f.read()
    return blobs
