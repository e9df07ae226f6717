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

from bap import metrics as M
from bap.atomic import atomic_path
from bap.engine.evaluation import evaluate

if TYPE_CHECKING:
    from bap.engine.trainer import Trainer

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"


class Hook:
    def before_train(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer") -> None: ...

    def after_epoch(self, trainer: "Trainer") -> None: ...

    def after_train(self, trainer: "Trainer") -> None: ...


class EvalHook(Hook):
    """Per-domain validation accuracy into ``trainer.epoch_metrics`` after every epoch."""

    def after_epoch(self, trainer: "Trainer") -> None:
        acc = evaluate(trainer.model, trainer.domains, trainer.cfg.train.eval_batch_size, trainer.device,
                       trainer.cfg.data.num_workers)
        for name, value in acc.items():
            trainer.epoch_metrics[M.val_acc_key(name)] = value
        trainer.epoch_metrics[M.VAL_ACC_MEAN] = M.mean_accuracy(acc)


class CountHook(Hook):
    """Size of the pruned model training would end with if it stopped now, relative to the single-domain backbone:
    the current masks projected to the budget (as ``finalize`` does), materialized and counted; the switches are
    left as they were.

    Reported every epoch so a sweep shows trials moving along the accuracy-cost plane, and so a scheduler can
    place a running trial there (before the budget has annealed, the unprojected masks are larger than any model
    the trial can end with).
    """

    def after_epoch(self, trainer: "Trainer") -> None:
        from bap.counting import count, reference_counts
        from bap.budget import project_to_budget
        from bap.prune import materialize

        model = trainer.model
        sizes = {name: d.input_size for name, d in trainer.domains.items()}
        if not hasattr(self, "reference"):
            self.reference = reference_counts(model, sizes)
        latents = [p.detach().clone() for p in model.switch_parameters()]
        project_to_budget(model, trainer.cfg.budget.beta, trainer.costs)
        counts = count(materialize(model), sizes)
        with torch.no_grad():
            for p, saved in zip(model.switch_parameters(), latents):
                p.copy_(saved)
        trainer.epoch_metrics[M.PARAMS_RATIO] = counts.params / self.reference.params
        trainer.epoch_metrics[M.MACS_RATIO] = counts.macs_mean / self.reference.macs_mean


def read_checkpoint(directory: str, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The trainer state ``CheckpointHook`` last wrote in ``directory`` (tensors only), or None."""
    path = os.path.join(directory, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location=device, weights_only=True)


class CheckpointHook(Hook):
    """Writes the full trainer state every epoch, atomically, so a crash mid-write keeps the last good one; with
    ``resume``, first continues exactly from the state already there (if any)."""

    def __init__(self, directory: str, resume: bool = False) -> None:
        self.directory, self.resume = directory, resume

    @property
    def path(self) -> str:
        return os.path.join(self.directory, CHECKPOINT_NAME)

    def before_train(self, trainer: "Trainer") -> None:
        state = read_checkpoint(self.directory, trainer.device) if self.resume else None
        if state is not None:
            trainer.load_state_dict(state)
            log.info("resumed from %s at epoch %d", self.path, trainer.epoch)

    def after_epoch(self, trainer: "Trainer") -> None:
        with atomic_path(self.path) as tmp:
            torch.save(trainer.state_dict(), tmp)
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
