"""The sweep's ``tune.Tuner``: its param space (a grid or an Optuna search), its scheduler and searcher, its run
settings; or the Tuner a resume restores from the sweep's folder."""

from __future__ import annotations

import os

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from orchestrator.config import SweepConfig, SweepPlan, objectives, trial_name
from orchestrator.stopping import ParetoStopping
from orchestrator.trainable import PROGRESS_METRICS

# Tune snapshots the whole sweep's state (every trial's) whenever one trial has checkpointed this many times since
# the last snapshot. With 1 that is every epoch of every trial, a cost growing with the sweep (BENCHMARKS.md,
# large_sweep_real); with 2 a trial's newest two checkpoints stay on disk.
TRIAL_CHECKPOINTS_KEPT = 2
# A searcher's objectives (acc_mean and the cost) are in a trial's final result only, not in its per-epoch ones.
_TUNE_STRICT_METRICS_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
# search.sampler -> its Optuna class and the argument search.startup_trials sets.
_SAMPLERS = {"tpe": (optuna.samplers.TPESampler, "n_startup_trials"),
             "nsga2": (optuna.samplers.NSGAIISampler, "population_size")}


def scheduler(cfg: SweepConfig):
    """``scheduler.name`` as Tune's trial scheduler (None: every trial runs all its epochs)."""
    s = cfg.scheduler
    if s.name == "none":
        return None
    if s.name == "pareto":
        return ParetoStopping(grace_period=s.grace_period, margin=s.margin)
    # One more than the epochs: the trial's last report carries its final (pruned-model) metrics.
    max_t = (s.max_t or cfg.train.epochs) + 1
    return ASHAScheduler(time_attr="training_iteration", metric=s.metric, mode=s.mode, max_t=max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor)


class StoppedAsPrunedOptunaSearch(OptunaSearch):
    """Ray's ``OptunaSearch``, which tells Optuna a trial stopped before its final result (``scheduler=pareto``)
    was pruned. The base class would tell it the stopped trial's partial objectives (cost, no acc_mean), which
    Optuna refuses, leaving the trial RUNNING in the study."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result is not None and any(result.get(metric) is None for metric in self.metric):
            result = None
        super().on_trial_complete(trial_id, result, error)


def searcher(plan: SweepPlan) -> OptunaSearch | None:
    """The seeded multi-objective Optuna searcher of a search; None for a grid."""
    if not plan.space:
        return None
    s = plan.cfg.search
    goals = objectives(s)
    sampler, startup = _SAMPLERS[s.sampler]
    startup_kw = {} if s.startup_trials is None else {startup: s.startup_trials}
    return StoppedAsPrunedOptunaSearch(metric=list(goals), mode=list(goals.values()),
                                       sampler=sampler(seed=s.seed, **startup_kw))


def param_space(plan: SweepPlan) -> dict:
    """Tune's ``param_space``: a grid over every axis, or a search's fixed values and drawn ranges."""
    if not plan.space:
        return {name: tune.grid_search(values) for name, values in plan.axes.items()}
    space = {name: values[0] for name, values in plan.axes.items()}  # one value each (validate)
    for name, searched in plan.space.items():
        if searched.kind == "choice":
            space[name] = tune.choice(list(searched.values))
        else:
            space[name] = (tune.loguniform if searched.kind == "loguniform" else tune.uniform)(*searched.values)
    return space


def fit_environ(plan: SweepPlan) -> dict[str, str]:
    """Environment variables ``Tuner.fit`` needs for ``plan``."""
    return {_TUNE_STRICT_METRICS_ENV: "1"} if plan.space else {}


def build_tuner(plan: SweepPlan, sweep_dir: str, restore_from: tuple | None, trainable, callbacks: list) -> tune.Tuner:
    """The sweep's Tuner writing to ``sweep_dir``; with ``restore_from`` (a file system and the sweep's path in
    it, ``resume.check_restorable``'s), the one restored from that folder."""
    cfg = plan.cfg
    if restore_from:
        # The Tuner's settings (callbacks included) come back from the folder's tuner.pkl, read through the
        # verifying file system (orchestrator.verified_fs), as is everything Tune and the trials read back.
        filesystem, path = restore_from
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=filesystem)
    reporter = tune.CLIReporter(parameter_columns={name: name for name in ("budget", "method", *plan.space)},
                                metric_columns=list(PROGRESS_METRICS), max_report_frequency=15)
    return tune.Tuner(
        trainable,
        param_space=param_space(plan),
        tune_config=tune.TuneConfig(
            scheduler=scheduler(cfg), max_concurrent_trials=cfg.ray.max_concurrent_trials,
            # A search: num_samples trials its sampler picks; a grid: each combination once.
            search_alg=searcher(plan), num_samples=cfg.search.num_samples if plan.space else 1,
            # A finished trial's worker takes the next trial: no new process, imports or data build each time
            # (all trials ask for the same resources, which reuse requires).
            reuse_actors=True,
            trial_name_creator=lambda t: trial_name(t.config),
            trial_dirname_creator=lambda t: f"{trial_name(t.config)}_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=os.path.basename(sweep_dir), storage_path=cfg.ray.storage_path, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=TRIAL_CHECKPOINTS_KEPT),
            progress_reporter=reporter, verbose=1,
        ),
    )
