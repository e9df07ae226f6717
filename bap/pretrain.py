"""Pretrain a single-domain backbone on labelled data and save the state dict ``build_model(weights=...)`` loads.

BA² and BAP start from a frozen pretrained backbone. Labs with their own source data (an ImageFolder tree,
or the embedded ``shapes`` domain on CPU) make one here; nothing is ever downloaded.

    python -m bap.pretrain --backbone resnet26 --width 0.25 --out resnet26_w0.25.pt

An epoch is ``--steps-per-epoch`` batches, so a real pretraining states its length in images: Decathlon's
imagenet12 has about 1.23 M training images, one pass at batch 256 is about 4,800 steps (see the README).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bap.atomic import atomic_path
from bap.config import DataConfig
from bap.data import DomainData, build_source, train_batches
from bap.engine.cpu_memory import retain_freed_memory
from bap.engine.evaluation import evaluate
from bap.engine.trainer import batch_seed, resolve_device
from bap.models import build_model, single_domain_state_dict

log = logging.getLogger(__name__)


SCHEDULES = ("onecycle", "cosine")


@dataclass
class PretrainConfig:
    backbone: str = "resnet26"
    width: float = 1.0
    epochs: int = 10
    steps_per_epoch: int = 80
    batch_size: int = 64
    # Peak of a one-cycle schedule: on the embedded source it reaches ~90% top-1 in 800 steps where a constant
    # or cosine 0.1 stalls near 25% (measured at width 0.25).
    lr: float = 0.2
    # onecycle (warm-up then anneal, the default above) or cosine (from lr to 0, the usual long ImageNet run)
    schedule: str = "onecycle"
    weight_decay: float = 5e-4
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"pretrain.{name}={getattr(self, name)} must be a positive integer")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"pretrain.schedule={self.schedule!r} is not supported; use one of {', '.join(SCHEDULES)}")
        if not self.lr > 0:
            raise ValueError(f"pretrain.lr={self.lr} must be > 0")


def pretrain(cfg: PretrainConfig, data: DomainData, out: str, progress: bool = False) -> float:
    """Train every weight of ``cfg.backbone`` on ``data`` (SGD, one-cycle LR); save to ``out``; return val top-1 (%).

    ``progress``: a progress bar over the steps with its ETA (a person waiting at a terminal), instead of one log
    line per epoch."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    # A single-domain net trains its convs, so no conv is switched and every weight is trainable.
    model = build_model(cfg.backbone, {data.name: data.num_classes}, width=cfg.width, unswitched=["*"])
    for p in model.parameters():
        p.requires_grad_(True)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                                nesterov=True)
    total = cfg.epochs * cfg.steps_per_epoch
    if cfg.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    else:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    bar = tqdm(total=total, desc=f"pretrain {cfg.backbone} on {data.name}", unit="step", dynamic_ncols=True,
               disable=not progress)
    for epoch in range(cfg.epochs):
        losses = []
        for x, y in train_batches(data.train, cfg.batch_size, cfg.steps_per_epoch, batch_seed(cfg.seed, epoch, 0)):
            loss = F.cross_entropy(model(x.to(device), data.name), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
        mean_loss = sum(losses) / len(losses)
        if progress:
            bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{mean_loss:.3f}")
        else:
            log.info("pretrain epoch %d/%d: loss %.3f", epoch + 1, cfg.epochs, mean_loss)
    bar.close()
    acc = evaluate(model, {data.name: data}, 256, device)[data.name]
    with atomic_path(out) as tmp:
        torch.save(single_domain_state_dict(model, data.name), tmp)
    log.info("pretrained %s (width %s) on %s: val top-1 %.1f%%, saved to %s", cfg.backbone, cfg.width, data.name,
             acc, out)
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="state-dict file to write")
    parser.add_argument("--backbone", default="resnet26")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--data", default="embedded", help="embedded, decathlon or imagenet_sketch")
    parser.add_argument("--root", default=None, help="data root (not needed for embedded)")
    parser.add_argument("--domain", default=None, help="source domain of --root (default: the data set's own)")
    parser.add_argument("--image-size", type=int, default=32, help="embedded data only")
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    parser.add_argument("--steps-per-epoch", type=int, default=PretrainConfig.steps_per_epoch)
    parser.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=PretrainConfig.lr, help="peak (onecycle) or initial (cosine)")
    parser.add_argument("--schedule", default=PretrainConfig.schedule, choices=SCHEDULES)
    parser.add_argument("--weight-decay", type=float, default=PretrainConfig.weight_decay)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    retain_freed_memory()
    data_cfg = DataConfig(name=args.data, root=args.root, image_size=args.image_size,
                          domains=[args.domain] if args.domain else None)
    cfg = PretrainConfig(backbone=args.backbone, width=args.width, epochs=args.epochs,
                         steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
                         schedule=args.schedule, weight_decay=args.weight_decay, device=args.device)
    pretrain(cfg, build_source(data_cfg), args.out, progress=True)


if __name__ == "__main__":
    main()
