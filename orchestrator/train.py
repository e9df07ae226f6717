"""``python -m orchestrator.train budget=0.5 ...``: one trial without Ray, recorded in MLflow like a sweep's trial.

Same config as ``orchestrator.sweep`` (same presets and keys); the singular ``budget=``, ``seed=`` and the
``methods=`` / ``backbones=`` axes must pick exactly one trial. Useful to debug a configuration before a sweep.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from bap.engine.cpu_memory import retain_freed_memory
from orchestrator.config import SweepConfig, plan_sweep, resolve_paths, trial_name
from orchestrator.errors import UsageError
from orchestrator.pretrained import backbone_weights
from orchestrator.spool import DEFAULT_SPOOL, Recorder, scoped
from orchestrator.tracking import TRIAL_NAME_TAG, check_mlflow, client_for, ensure_experiment, use_fail_fast_http
from orchestrator.trainable import record_trial, with_weights
from orchestrator.validate import local_resources, validate

# One trial: `budget=0.5` reads as the one-value axis `budgets=[0.5]` (likewise seed).
SINGULAR = {"budget": "budgets", "seed": "seeds"}


def singular_args(argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in SINGULAR and not value.startswith(("[", "{")) and "," not in value:
            arg = f"{SINGULAR[key]}=[{value}]"
        out.append(arg)
    return out


def run_one(cfg: SweepConfig) -> dict[str, float]:
    plan = plan_sweep(resolve_paths(cfg))
    cfg, trials = plan.cfg, plan.trials
    validate(plan, cluster_resources=local_resources())
    if plan.space:
        raise UsageError(f"error: orchestrator.train runs one trial; search={cfg.search.algorithm} picks many, so run "
                         "it with orchestrator.sweep, or drop search=... and pick one trial, e.g. budget=0.5")
    if len(trials) != 1:
        raise UsageError(f"error: orchestrator.train runs one trial but this config gives {len(trials)} "
                         f"({', '.join(trial_name(t) for t in trials)}); pick one value per axis, e.g. budget=0.5, "
                         "or run them all with orchestrator.sweep")
    params = trials[0]
    check_mlflow(cfg.mlflow.tracking_uri)
    weights = backbone_weights(plan)
    client = client_for(cfg.mlflow.tracking_uri)
    experiment_id = ensure_experiment(client, cfg.experiment)
    name = trial_name(params)
    run_id = client.create_run(experiment_id, run_name=name, tags={TRIAL_NAME_TAG: name}).info.run_id
    recorder = Recorder(client, run_id, scoped(os.path.abspath(DEFAULT_SPOOL), cfg.mlflow.tracking_uri, cfg.experiment))
    with tempfile.TemporaryDirectory(prefix="bap-train-") as work:
        run_cfg = with_weights(plan.trial_config(params), params, weights, work)
        result = record_trial(run_cfg, params, recorder, checkpoint_dir=os.path.join(work, "checkpoint"),
                              progress=True, system_metrics_every_s=cfg.mlflow.system_metrics_every_s)
    m = result.metrics
    print(f"{name}: acc_mean={m['acc_mean']:.2f} params_ratio={m['params_ratio']:.3f} "
          f"macs_ratio={m['macs_ratio']:.3f}; MLflow run {run_id} in experiment {cfg.experiment!r}")
    return m


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from orchestrator.cli import run_hydra, sigterm_as_ctrl_c

    sigterm_as_ctrl_c()
    retain_freed_memory()
    use_fail_fast_http()
    try:
        run_hydra(run_one, singular_args(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted: the trial's MLflow run is marked KILLED", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
