"""``bap.train``: one BAP run from a config to a pruned multi-domain model and its final metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from bap import metrics as M
from bap.config import ExperimentConfig
from bap.counting import count, reference_counts
from bap.data import DomainData, build_domains, train_batches
from bap.engine.evaluation import evaluate
from bap.engine.hooks import CallbackHook, CheckpointHook, CountHook, EvalHook, Hook, LogHook, ProgressHook
from bap.engine.trainer import Trainer, resolve_device
from bap.layers import DomainBatchNorm2d
from bap.budget import project_to_budget, usage_summary
from bap.models import MultiDomainNet, build_model
from bap.prune import materialize

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: MultiDomainNet  # trained, switches projected onto the budget (still full size)
    pruned: MultiDomainNet  # materialize(model): what serves every domain
    metrics: dict[str, float]  # final metrics, keys from bap.metrics
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch
    # domain -> (H, W) of the images its eval transform yields: what a served model must be given
    input_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def build_for(cfg: ExperimentConfig, domains: Mapping[str, DomainData]) -> MultiDomainNet:
    m = cfg.model
    return build_model(
        m.backbone, {name: d.num_classes for name, d in domains.items()}, width=m.width, weights=m.weights,
        unswitched=m.unswitched, threshold=cfg.budget.threshold, init=cfg.budget.init, source_domain=m.source_domain,
    )


def train(
    cfg: ExperimentConfig,
    *,
    domains: Mapping[str, DomainData] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    progress: bool = False,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Train every domain of ``cfg.data`` jointly under ``cfg.budget``, then project onto the budget and prune.

    - ``domains``: prebuilt data (default: ``build_domains(cfg.data)``, which validates it first);
    - ``callback(metrics)``: called after every epoch with that epoch's metrics (losses, ``val/acc/<domain>``,
      ``budget_usage/<domain>``, ``budget_target``, ``union_fraction``, ``overlap``, ``params_ratio``,
      ``macs_ratio``, and ``checkpoint`` if one was written);
    - ``checkpoint_dir``: write ``checkpoint.pt`` there every epoch; with ``resume=True`` continue from it
      exactly (model, optimizers, the sharing weight's dual variable, RNG state, epoch) when it exists;
    - ``progress``: show a progress bar; ``hooks``: more hooks, run after the built-in ones.
    """
    resolve_device(cfg.train.device)  # fail on a missing GPU before building data or model
    torch.manual_seed(cfg.train.seed)
    domains = dict(domains) if domains is not None else build_domains(cfg.data)
    model = build_for(cfg, domains)
    # After an epoch: metrics, then its checkpoint, then reporting. Before training, the checkpoint hook's resume
    # comes before the progress bar reads the epoch.
    trainer = Trainer(model, domains, cfg, hooks=[
        EvalHook(), CountHook(), CheckpointHook(checkpoint_dir, resume) if checkpoint_dir else None,
        CallbackHook(callback) if callback else None, ProgressHook() if progress else None, LogHook(), *hooks,
    ])
    trainer.fit()
    return finalize(trainer)


@torch.no_grad()
def recalibrate_bn(model: MultiDomainNet, domains: Mapping[str, DomainData], batch_size: int, steps: int,
                   device: torch.device, seed: int) -> None:
    """Re-estimate every domain's BN running statistics under its current masks: ``steps`` training batches,
    no gradient, a plain average instead of the running one. Switching channels off changes what each BN sees."""
    was_training = model.training
    model.train()
    bns = [m for m in model.modules() if isinstance(m, DomainBatchNorm2d)]
    for index, (name, data) in enumerate(domains.items()):
        momenta = []
        for bn in bns:
            inner = bn.bns[name]
            momenta.append(inner.momentum)
            inner.reset_running_stats()
            inner.momentum = None  # cumulative average over the pass
        for x, _ in train_batches(data.train, batch_size, steps, seed * 7919 + index):
            model(x.to(device), name)
        for bn, momentum in zip(bns, momenta):
            bn.bns[name].momentum = momentum
    model.train(was_training)


def finalize(trainer: Trainer) -> TrainResult:
    """Hard budget guarantee, evaluation, physical pruning and counting of a trained ``trainer``.

    When the projection turns anything off, the accuracy before it is reported too, BN statistics are
    re-estimated, and a projection that took more than ``budget.heavy_projection`` of a domain's budget flags the
    trial ``projection_heavy``: a model the projection reshaped is not the one training produced.
    """
    cfg, model = trainer.cfg, trainer.model
    budget = cfg.budget.beta
    eval_args = (cfg.train.eval_batch_size, trainer.device, cfg.data.num_workers)
    before = usage_summary(model.masks(), trainer.costs)["usage"]
    turned_off = project_to_budget(model, budget, trainer.costs)
    projected = any(turned_off.values())
    acc_before = evaluate(model, trainer.domains, *eval_args) if projected else None
    if projected:
        recalibrate_bn(model, trainer.domains, cfg.train.batch_size, cfg.train.steps_per_epoch, trainer.device,
                       cfg.train.seed)
    summary = usage_summary(model.masks(), trainer.costs)
    usage = {d: float(u) for d, u in summary["usage"].items()}
    share = {d: (float(before[d]) - usage[d]) / budget for d in usage}

    pruned = materialize(model)
    acc = evaluate(pruned, trainer.domains, *eval_args)
    input_sizes = {name: d.input_size for name, d in trainer.domains.items()}
    counts, reference = count(pruned, input_sizes), reference_counts(model, input_sizes)

    metrics: dict[str, float] = {M.acc_key(d): a for d, a in acc.items()}
    metrics[M.ACC_MEAN] = M.mean_accuracy(acc)
    metrics[M.ACC_MEAN_BEFORE_PROJECTION] = M.mean_accuracy(acc_before) if acc_before else metrics[M.ACC_MEAN]
    metrics.update({M.budget_usage_key(d): u for d, u in usage.items()})
    metrics.update({M.projected_off_key(d): float(n) for d, n in turned_off.items()})
    metrics.update({M.projected_share_key(d): v for d, v in share.items()})
    metrics[M.PROJECTION_HEAVY] = float(max(share.values()) > cfg.budget.heavy_projection)
    metrics.update({M.macs_key(d): float(v) for d, v in counts.macs.items()})
    metrics[M.BUDGET_MET] = float(all(u <= budget + 1e-9 for u in usage.values()))
    metrics[M.UNION_FRACTION] = float(summary["union"])
    metrics[M.OVERLAP] = float(summary["overlap"])
    metrics[M.PARAMS_TOTAL] = float(counts.params)
    metrics[M.PARAMS_CONV] = float(counts.conv_params)
    metrics[M.PARAMS_RATIO] = counts.params / reference.params
    metrics[M.PARAMS_CONV_RATIO] = counts.conv_params / reference.conv_params
    metrics[M.SWITCHES] = float(counts.switches)
    metrics[M.MACS_MEAN] = counts.macs_mean
    metrics[M.MACS_RATIO] = counts.macs_mean / reference.macs_mean
    if M.scored_domains(acc):
        score = M.decathlon_score(acc)
        metrics[M.DECATHLON_SCORE] = score
        metrics.update(M.efficiency(score, metrics[M.PARAMS_RATIO], metrics[M.MACS_RATIO]))
    log.info("final: acc_mean=%.2f params_ratio=%.3f macs_ratio=%.3f union=%.3f overlap=%.2f; projection turned "
             "off %s", metrics[M.ACC_MEAN], metrics[M.PARAMS_RATIO], metrics[M.MACS_RATIO], metrics[M.UNION_FRACTION],
             metrics[M.OVERLAP], turned_off)
    return TrainResult(model=model, pruned=pruned, metrics=metrics, history=list(trainer.history),
                       input_sizes={d: tuple(size) for d, size in input_sizes.items()})
