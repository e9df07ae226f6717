"""Hooks: everything around the training loop (evaluation, checkpoints, progress, reporting).

The trainer is passed to each call, so hooks hold no reference to it. Order matters: the trainer runs
hooks in list order, and ``bap.train`` puts evaluation before checkpointing before reporting, so a reported
epoch always has its metrics and its checkpoint on disk.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable

import torch

from bap.data import eval_batches

if TYPE_CHECKING:
    from bap.engine.trainer import Trainer

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"


class Hook:
    def before_train(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer") -> None: ...

    def after_epoch(self, trainer: "Trainer") -> None: ...

    def after_train(self, trainer: "Trainer") -> None: ...


@torch.no_grad()
def evaluate(model, domains, batch_size: int, device: torch.device, num_workers: int = 0) -> dict[str, float]:
    """Top-1 accuracy (percent) of ``model`` on every domain's validation split."""
    was_training = model.training
    model.eval()
    result = {}
    try:
        for name, data in domains.items():
            correct, total = 0, 0
            for x, y in eval_batches(data.val, batch_size, num_workers):
                logits = model(x.to(device, non_blocking=True), name)
                correct += int((logits.argmax(dim=1).cpu() == y).sum())
                total += len(y)
            result[name] = 100.0 * correct / max(total, 1)
    finally:
        model.train(was_training)
    return result


class EvalHook(Hook):
    """Per-domain validation accuracy into ``trainer.epoch_metrics`` after every epoch."""

    def after_epoch(self, trainer: "Trainer") -> None:
        acc = evaluate(trainer.model, trainer.domains, trainer.cfg.train.eval_batch_size, trainer.device,
                       trainer.cfg.data.num_workers)
        for name, value in acc.items():
            trainer.epoch_metrics[f"val/acc/{name}"] = value
        trainer.epoch_metrics["val/acc_mean"] = sum(acc.values()) / len(acc)


class CountHook(Hook):
    """Size of the model the current masks would materialize to, relative to the single-domain backbone.

    Reported every epoch so a sweep shows trials moving along the accuracy-cost plane, not only where they end.
    """

    def after_epoch(self, trainer: "Trainer") -> None:
        from bap.counting import count, reference_counts
        from bap.prune import materialize

        sizes = {name: d.input_size for name, d in trainer.domains.items()}
        if not hasattr(self, "reference"):
            self.reference = reference_counts(trainer.model, sizes)
        counts = count(materialize(trainer.model), sizes)
        trainer.epoch_metrics["params_ratio"] = counts.params / self.reference.params
        trainer.epoch_metrics["macs_ratio"] = counts.macs_mean / self.reference.macs_mean


class CheckpointHook(Hook):
    """Writes the full trainer state every epoch; atomically, so a crash mid-write keeps the last good one."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    @property
    def path(self) -> str:
        return os.path.join(self.directory, CHECKPOINT_NAME)

    def after_epoch(self, trainer: "Trainer") -> None:
        os.makedirs(self.directory, exist_ok=True)
        tmp = self.path + ".tmp"
        torch.save(trainer.state_dict(), tmp)
        os.replace(tmp, self.path)
        trainer.last_checkpoint = self.path


class CallbackHook(Hook):
    """Forwards each epoch's metrics to ``fn(metrics)``: how the orchestrator reports to Ray Tune and MLflow."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def after_epoch(self, trainer: "Trainer") -> None:
        metrics = dict(trainer.epoch_metrics)
        if trainer.last_checkpoint is not None:
            metrics["checkpoint"] = trainer.last_checkpoint
        self.fn(metrics)


class ProgressHook(Hook):
    """A progress bar over optimizer steps, for runs started by hand."""

    def before_train(self, trainer: "Trainer") -> None:
        from tqdm.auto import tqdm

        total = trainer.cfg.train.epochs * trainer.cfg.train.steps_per_epoch
        self.bar = tqdm(total=total, initial=trainer.epoch * trainer.cfg.train.steps_per_epoch, desc="train",
                        unit="step", dynamic_ncols=True)

    def after_step(self, trainer: "Trainer") -> None:
        self.bar.update(1)

    def after_epoch(self, trainer: "Trainer") -> None:
        m = trainer.epoch_metrics
        self.bar.set_postfix(epoch=trainer.epoch, acc_mean=f"{m.get('val/acc_mean', float('nan')):.1f}",
                             usage=f"{max(v for k, v in m.items() if k.startswith('budget_usage/')):.3f}")

    def after_train(self, trainer: "Trainer") -> None:
        self.bar.close()


class LogHook(Hook):
    """One log line per epoch (the library logs; the caller decides where logs go)."""

    def after_epoch(self, trainer: "Trainer") -> None:
        m = trainer.epoch_metrics
        log.info("epoch %d: %s", trainer.epoch,
                 ", ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float)))
