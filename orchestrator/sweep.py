"""``python -m orchestrator.sweep budgets=0.25,0.5,1.0``: a BAP sweep on Ray Tune, recorded in MLflow.

Config -> validation -> reachable services -> pretrained backbone bytes -> Ray -> one MLflow parent run -> a
Tune grid over the sweep axes, or the trials an Optuna search draws (one trial = ``orchestrator.trainable.run_trial``)
-> the Pareto front, updated as trials finish and final at the end, logged to the parent run, which is closed in a
true state (FINISHED, FAILED, KILLED). ``resume=true`` (or ``resume=PATH``) restores the sweep its parent run
recorded (``orchestrator.resume``) under the same parent run; finished trials are not run again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shlex
import sys
import time

import ray
from ray import tune

from bap.engine.cpu_memory import limit_arenas
from orchestrator.closing import close_sweep
from orchestrator.config import SweepConfig, plan_sweep, resolve_paths
from orchestrator.errors import ClosingSpooled, Interrupted, TrialsFailed
from orchestrator.front import finish_sweep, format_table
from orchestrator.interrupts import after_ray_init, closing, environ, graceful_stop, reported
from orchestrator.live_page import SweepProgress
from orchestrator.pretrained import backbone_weights
from orchestrator.resume import (LAUNCH_DIR_TAG, DigestRecorder, check_restorable, check_same_sweep, find_sweep,
                                 recorded_config, resume_target)
from orchestrator.saved_view import pareto_page, share_pareto_view
from orchestrator.services import check_services, start_ray
from orchestrator.spool import DEFAULT_SPOOL, Recorder, scoped
from orchestrator.tracking import COMMAND_TAG, SWEEP_TAG, client_for, ensure_experiment, flatten, run_page, \
    use_fail_fast_http
from orchestrator.trainable import run_trial
from orchestrator.tuner import build_tuner, fit_environ
from orchestrator.validate import check_cluster, known_resources, validate

# Malloc arenas for the driver's threads (Ray's and Tune's): with glibc's 8 per core its memory grew with every
# trial of a large sweep (BENCHMARKS.md, large_sweep_real).
DRIVER_ARENAS = 2


def new_sweep_dir(cfg: SweepConfig) -> str:
    """A new sweep's Tune folder: ``<ray.storage_path>/<experiment>_<local time>``."""
    return f"{cfg.ray.storage_path.rstrip('/')}/{cfg.experiment}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def sweep_spool_dir(cfg: SweepConfig) -> str:
    """Where trials keep MLflow writes the server did not take: beside Tune's results when ``ray.storage_path``
    is a directory (one every node mounts, like the compose stack's ``runs`` volume), so the driver and
    ``orchestrator.report sync=true`` can replay them. A URI (s3://...) is no directory to append to: each node
    then spools to its own ``runs/mlflow_spool``, which ``orchestrator.report sync=true`` replays on that node.
    Either way in the folder of this tracking store and experiment (``spool.scoped``)."""
    root = os.path.abspath(DEFAULT_SPOOL) if "://" in cfg.ray.storage_path else \
        os.path.join(cfg.ray.storage_path, "mlflow_spool")
    return scoped(root, cfg.mlflow.tracking_uri, cfg.experiment)


def run_sweep(cfg: SweepConfig, command: str | None = None):
    """Run (or resume) the sweep ``cfg``; returns the final Pareto table (one dict per finished trial).

    Ends in a true state or raises (``orchestrator.errors``; the entry point's exit status in brackets):
    interrupted (Ctrl-C, SIGTERM) -> the parent and unfinished trial runs KILLED, ``Interrupted`` (130); failed
    trials -> the parent FAILED, ``TrialsFailed`` (1); MLflow unreachable at the end -> what is left spooled for
    ``orchestrator.report sync=true``, ``ClosingSpooled`` (3). ``command``, the command line, goes in the sweep's
    description."""
    resume, resolved = resume_target(cfg.resume), resolve_paths(cfg)
    if resume:  # the sweep MLflow recorded, its relative paths resolved where it was launched
        check_services(resolved)
        found = find_sweep(client_for(resolved.mlflow.tracking_uri), resolved.experiment, resume)
        resolved = recorded_config(cfg, found)
    plan = plan_sweep(resolved)  # planned and validated once
    validate(plan, cluster_resources=known_resources(plan.cfg))
    cfg = plan.cfg
    if resume:
        check_same_sweep(found.data.params, cfg)
        sweep_dir = found.data.tags[SWEEP_TAG]
        restore_from = check_restorable(sweep_dir, found)  # the file system serving only verified bytes, and path
    else:
        check_services(cfg)
        sweep_dir, restore_from = new_sweep_dir(cfg), None
    client = client_for(cfg.mlflow.tracking_uri)
    start_ray(cfg)
    after_ray_init()  # Ray's SIGTERM handler replaced ours (orchestrator.interrupts)
    check_cluster(cfg, ray.cluster_resources())  # known once joined; before any pretraining, so a small one fails now
    weights = backbone_weights(plan, in_ray=True)  # a Ray task: inside Ray's CPU accounting

    spool_dir = sweep_spool_dir(cfg)
    experiment_id = ensure_experiment(client, cfg.experiment)
    if resume:
        parent_run_id = found.info.run_id
        client.update_run(parent_run_id, status="RUNNING")
        print(f"resuming sweep {sweep_dir} (MLflow parent run {parent_run_id})")
    else:
        parent_run_id = client.create_run(experiment_id, run_name=os.path.basename(sweep_dir), tags={
            SWEEP_TAG: sweep_dir, LAUNCH_DIR_TAG: os.getcwd(), **({COMMAND_TAG: command} if command else {}),
        }).info.run_id
        share_pareto_view(client, experiment_id, parent_run_id)  # its trials' scatter in the runs page
    parent = Recorder(client, parent_run_id, spool_dir, finish_sweep)
    if not resume:
        parent.log_params({**flatten(dataclasses.asdict(cfg)),
                           **{f"axis.{k}": str(v) for k, v in plan.axes.items()}})
    digests = DigestRecorder(cfg.mlflow.tracking_uri, parent_run_id)

    status, failed, errors = "KILLED", [], {}
    try:
        tuner = build_tuner(plan, sweep_dir, restore_from, tune.with_resources(
            tune.with_parameters(run_trial, sweep=cfg, experiment_id=experiment_id, parent_run_id=parent_run_id,
                                 spool_dir=spool_dir, weights=weights),
            {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial},
        ), [SweepProgress(cfg.mlflow.tracking_uri, experiment_id, parent_run_id, cfg.scheduler.name), digests])
        digests.record(sweep_dir)  # tuner.pkl, written as the Tuner was made
        with digests.watching(sweep_dir), graceful_stop() as stopped, environ(fit_environ(plan)):
            results = tuner.fit()
        failed = [r for r in results if r.error is not None]
        errors = {r.metrics["trial_id"]: f"{type(r.error).__name__}: {r.error}" for r in failed
                  if "trial_id" in r.metrics}
        if not stopped():
            status = "FAILED" if failed else "FINISHED"
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune started
        pass
    except Exception:  # Tune itself broke: the parent must not stay RUNNING
        try:
            with closing("FAILED", lambda: client.set_terminated(parent_run_id, "KILLED")):
                close_sweep(cfg, client, experiment_id, parent_run_id, parent, "FAILED", errors, spool_dir)
        except ClosingSpooled as spooled:  # where the closing waits, above Tune's own error
            print(spooled, file=sys.stderr)
        except Exception:  # Tune's error, re-raised below, is the one to report
            pass
        raise

    with closing(status, lambda: client.set_terminated(parent_run_id, "KILLED")):  # a signal here is deferred
        table = close_sweep(cfg, client, experiment_id, parent_run_id, parent, status, errors, spool_dir)
    print(format_table(table))
    print(f"{len(table.rows)} finished trial(s), {len(failed)} failed; "
          f"MLflow parent run {parent_run_id} ({status}) in experiment {cfg.experiment!r} at "
          f"{cfg.mlflow.tracking_uri}")
    for r in failed:
        print(f"failed: {r.path}: {r.error}")
    print(f"open the sweep: {run_page(cfg.mlflow.tracking_uri, experiment_id, parent_run_id)}")
    print(f"its trials' acc_mean against params_ratio: "
          f"{pareto_page(cfg.mlflow.tracking_uri, experiment_id, parent_run_id)}")
    if status == "KILLED":
        raise Interrupted(f"interrupted: unfinished trial runs and the parent run are marked KILLED; resume with the "
                          f"same arguments plus resume=true (this sweep: resume={sweep_dir})")
    if failed:
        raise TrialsFailed("")
    return table.rows


def main() -> None:
    limit_arenas(DRIVER_ARENAS)  # before Ray starts the driver's threads
    # Ray Tune's classic progress table (budget, epoch, val/acc_mean, acc_mean, params_ratio per trial).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from orchestrator.cli import run_hydra, sigterm_as_ctrl_c

    sigterm_as_ctrl_c()
    use_fail_fast_http()
    run_hydra(reported(functools.partial(run_sweep,
                                         command=shlex.join(["python", "-m", "orchestrator.sweep", *sys.argv[1:]]))))


if __name__ == "__main__":
    main()
