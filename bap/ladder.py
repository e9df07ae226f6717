"""The budget ladder (ours): a whole budget front from one anneal.

A grid trains one model per budget, yet a trial annealing to 0.25 passes 0.75 and 0.5 on the way. Here one
trainer anneals the budget target from 1 down to the smallest requested budget on the usual cubic schedule; when the
target reaches a requested budget (a rung), a branch forks: a copy of the trainer whose switches are re-selected at
exactly that budget and then fixed, whose BN and heads fine-tune for the steps a normal trial fine-tunes
(``1 - budget.anneal_end`` of training), and which is finalized, counted and pruned like a normal trial. The anneal
then continues from the state before the fork. Budget 1 forks where the anneal starts (nothing is off before it).

The smallest budget's rung is the trainer itself finishing its run, so a ladder of k budgets costs one trial plus
k - 1 fine-tunes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable, Collection, Mapping, Sequence

import torch

from bap.budget import budget_target, select_to_budget
from bap.config import ExperimentConfig
from bap.data import DomainData, build_domains
from bap.engine.hooks import Hook
from bap.engine.trainer import Trainer
from bap.train import TrainResult, build_for, finalize


def check_rungs(cfg: ExperimentConfig, budgets: Sequence[float]) -> list[float]:
    """The rungs in the order the anneal reaches them (descending); errors name the field and the fix."""
    if not budgets:
        raise ValueError("a ladder needs at least one budget; e.g. budgets=[1.0, 0.5, 0.25]")
    if cfg.sharing.one_shot:
        raise ValueError(f"sharing.loss={cfg.sharing.loss!r} fixes its switches at beta from the first step, so it has "
                         "no anneal to share; run it on the grid (ladder=false) or use its annealed twin")
    rungs = sorted(set(float(b) for b in budgets), reverse=True)
    if not all(0.0 < b <= 1.0 for b in rungs):
        raise ValueError(f"ladder budgets {rungs} must lie in (0, 1]")
    return rungs


def fork_step(cfg: ExperimentConfig, budget: float, lowest: float, total: int) -> int:
    """The step at which the anneal to ``lowest`` first allows no more than ``budget``: where its rung forks."""
    b = cfg.budget
    if budget >= 1.0:
        return math.floor(b.anneal_start * total)
    return next(s for s in range(total + 1) if budget_target(s, total, lowest, b.anneal_start, b.anneal_end) <= budget)


def _fine_tune(trainer: Trainer, steps: int) -> None:
    """``steps`` optimizer steps of BN and heads (the switches are fixed), epoch by epoch as ``Trainer.fit`` does."""
    done = 0
    while done < steps:
        for batches in trainer.epoch_batches():
            trainer.run_step(batches)
            trainer.step += 1
            done += 1
            if done == steps:
                break
        trainer.epoch += 1


def _branch(main: Trainer, budget: float) -> TrainResult:
    """Fork ``main`` at ``budget``: switches re-selected at exactly it and fixed, BN and heads fine-tuned, finalized."""
    cfg = dataclasses.replace(main.cfg, budget=dataclasses.replace(main.cfg.budget, beta=budget))
    rng = torch.get_rng_state()
    branch = Trainer(copy.deepcopy(main.model), main.domains, cfg)
    branch.load_state_dict(copy.deepcopy(main.state_dict()))  # optimizers' buffers too, not shared with main
    torch.set_rng_state(rng)  # the branch's load must not move the main run's random state
    select_to_budget(branch.model, {d: budget for d in branch.domains}, branch.costs)
    settled = math.ceil(cfg.budget.anneal_end * branch.total_steps)
    branch.step = max(branch.step, settled)  # from here on switches_fixed(): only BN and heads learn
    _fine_tune(branch, branch.total_steps - settled)
    return finalize(branch)


def train_ladder(
    cfg: ExperimentConfig,
    budgets: Sequence[float],
    *,
    domains: Mapping[str, DomainData] | None = None,
    on_rung: Callable[[float, TrainResult], None] | None = None,
    skip: Collection[float] = (),
    hooks: Sequence[Hook] = (),
) -> dict[float, TrainResult]:
    """Train every budget of ``budgets`` from one anneal of ``cfg`` (its ``budget.beta`` is ignored): budget ->
    result, each also passed to ``on_rung`` as soon as it is finalized. ``skip``: rungs already done (a resumed
    ladder), not forked again. ``hooks`` run on the shared anneal only."""
    rungs = check_rungs(cfg, budgets)
    lowest = rungs[-1]
    cfg = dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, beta=lowest))
    torch.manual_seed(cfg.train.seed)
    domains = dict(domains) if domains is not None else build_domains(cfg.data)
    main = Trainer(build_for(cfg, domains), domains, cfg, hooks=list(hooks))
    forks = {b: fork_step(cfg, b, lowest, main.total_steps) for b in rungs[:-1] if b not in skip}
    results: dict[float, TrainResult] = {}

    def fork_due(trainer: Trainer) -> None:
        for budget, step in forks.items():
            if step == trainer.step and budget not in results:
                results[budget] = _branch(trainer, budget)
                if on_rung:
                    on_rung(budget, results[budget])

    class _Forks(Hook):
        def after_step(self, trainer: Trainer) -> None:
            fork_due(trainer)

    main.hooks.append(_Forks())
    fork_due(main)  # a rung due before the first step (budget 1 with anneal_start 0)
    main.fit()
    if lowest not in skip:
        results[lowest] = finalize(main)
        if on_rung:
            on_rung(lowest, results[lowest])
    return results
