"""One trial on a Ray worker: ``bap.train`` with Tune reporting, Tune checkpoints and MLflow records.

The only module that calls ``tune.report`` / ``tune.get_checkpoint``. Every epoch the bap checkpoint is handed
to Tune, so a retried trial (``FailureConfig``) or a restored sweep continues from its last epoch. Metrics go
to the trial's own MLflow child run, found again (not duplicated) when the trial is retried.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Mapping

import yaml
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from ray import tune

import bap
from bap import metrics as M
from bap.engine.cpu_memory import retain_freed_memory
from bap.engine.hooks import CHECKPOINT_NAME, read_checkpoint
from orchestrator.config import SweepConfig, objectives, trial_config, trial_name
from orchestrator.mlflow_model import log_pyfunc_model
from orchestrator.spool import Recorder
from orchestrator.tracking import (ERROR_TAG, ERROR_TAG_LIMIT, RESUMED_TAG, client_for, find_or_create_child,
                                   flatten, use_fail_fast_http, with_retries)
from orchestrator.trial_keys import PARAM_KEYS, trial_tags

log = logging.getLogger(__name__)

# The columns of Tune's progress table (with the trial's budget parameter): the validation mean per epoch, then
# the pruned model's accuracy (acc_mean, only in the trial's final result) and size.
PROGRESS_METRICS = ("epoch", M.VAL_ACC_MEAN, M.ACC_MEAN, M.PARAMS_RATIO)


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def tune_metrics(sweep: SweepConfig) -> frozenset[str]:
    """The metrics Tune's parts read from a result: the progress table, the scheduler, the searcher's objectives
    and the pareto stopper (its cost, the heavy-projection tag). Only these are reported: the driver keeps running
    statistics of every reported metric of every trial for the whole sweep (about 2 KB each, 60+ a trial on six
    domains), and all of a trial's metrics are in its MLflow run."""
    return frozenset({*PROGRESS_METRICS, sweep.scheduler.metric, *objectives(sweep.search), M.PROJECTION_HEAVY})


def tune_result(metrics: Mapping[str, Any], sweep: SweepConfig) -> dict[str, float]:
    """``metrics`` cut to ``tune_metrics(sweep)``, as floats."""
    keep = tune_metrics(sweep)
    return {k: v for k, v in _numeric(metrics).items() if k in keep}


def _domain_table(result: bap.TrainResult) -> str:
    m = result.metrics
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["domain", "classes", "acc", "budget_usage", "projected_off", "macs"])
    for domain in result.pruned.domains:
        writer.writerow([domain, result.pruned.num_classes[domain], f"{m[M.acc_key(domain)]:.2f}",
                         f"{m[M.budget_usage_key(domain)]:.4f}", int(m[M.projected_off_key(domain)]),
                         int(m[M.macs_key(domain)])])
    return out.getvalue()


def _logged_epochs(recorder: Recorder) -> set[int]:
    try:
        return {m.step for m in recorder.client.get_metric_history(recorder.run_id, M.VAL_ACC_MEAN)}
    except Exception:  # server down: what it misses is re-logged from the checkpoint's history next time
        return set()


def _finished_metrics(client, run_id: str) -> dict[str, float] | None:
    run = client.get_run(run_id)
    if run.info.status == "FINISHED" and M.PARAMS_TOTAL in run.data.metrics:
        return dict(run.data.metrics)
    return None


def trial_params(cfg: bap.ExperimentConfig, params: dict[str, Any]) -> dict[str, str]:
    """Every resolved config value (flattened) plus some trial keys under their short names (``PARAM_KEYS``)."""
    tags = trial_tags(params)
    return {**flatten(dataclasses.asdict(cfg)), **{key: tags[key] for key in PARAM_KEYS}}


def record_trial(
    cfg: bap.ExperimentConfig,
    params: dict[str, Any],
    recorder: Recorder,
    *,
    checkpoint_dir: str,
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
    system_metrics_every_s: float = 0.0,
) -> bap.TrainResult:
    """Train one trial and record it in its MLflow run: params, tags, per-epoch and final metrics, the resolved
    config, the materialized model and a per-domain table; with ``system_metrics_every_s``, MLflow's own system
    metrics (``system/...``: CPU, memory, disk, network, GPU where present) sampled that often. Shared by the Tune
    trainable and ``orchestrator.train``, so a trial run by hand is recorded exactly like one in a sweep."""
    monitor = None
    if system_metrics_every_s > 0:
        # Telemetry goes straight to MLflow, not through the spool: an outage loses samples, never results.
        monitor = SystemMetricsMonitor(recorder.run_id, sampling_interval=system_metrics_every_s,
                                       resume_logging=resume, tracking_uri=recorder.client.tracking_uri)
        monitor.start()
    try:
        return _train_and_record(cfg, params, recorder, checkpoint_dir, resume, on_epoch, progress)
    except BaseException as error:
        # The run tells the truth: FAILED with the error, or KILLED when stopped (Ctrl-C, SIGTERM, Tune's stop).
        if isinstance(error, Exception):
            recorder.set_tags({ERROR_TAG: f"{type(error).__name__}: {error}"[:ERROR_TAG_LIMIT]})
        recorder.terminate("FAILED" if isinstance(error, Exception) else "KILLED")
        recorder.flush(timeout_s=10)
        raise
    finally:
        if monitor is not None:
            monitor.finish()


def _train_and_record(cfg: bap.ExperimentConfig, params: dict[str, Any], recorder: Recorder, checkpoint_dir: str,
                      resume: bool, on_epoch: Callable[[dict[str, float]], None] | None,
                      progress: bool) -> bap.TrainResult:
    recorder.log_params(trial_params(cfg, params))
    recorder.set_tags(trial_tags(params))
    # Epochs an earlier attempt of this trial recorded: its run is found again when the trial is retried or resumed.
    logged = _logged_epochs(recorder)
    state = read_checkpoint(checkpoint_dir) if resume else None
    if state is not None:
        recorder.set_tags({RESUMED_TAG: int(state["epoch"])})  # what a fault test reads back, not a worker's log
        for entry in state["history"]:  # epochs finished before the crash that MLflow never received
            if int(entry["epoch"]) not in logged:
                recorder.log_metrics(_numeric(entry), step=int(entry["epoch"]))

    def epoch_done(epoch_metrics: dict[str, Any]) -> None:
        numeric = _numeric(epoch_metrics)
        epoch = int(numeric["epoch"])
        # MLflow before Tune: a trial the scheduler stops ends inside Tune's report, its last epoch recorded. An
        # attempt stopped there before Tune kept its checkpoint trains that epoch again, the same (exact resume):
        # it is recorded once.
        if epoch not in logged:
            recorder.log_metrics(numeric, step=epoch)
        if on_epoch is not None:
            on_epoch(numeric)

    result = bap.train(cfg, callback=epoch_done, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)

    final_step = cfg.train.epochs + 1  # its own step: the pruned model's numbers, not the last epoch's
    recorder.log_metrics(result.metrics, step=final_step)
    if result.metrics[M.PROJECTION_HEAVY]:
        recorder.set_tags({M.PROJECTION_HEAVY: "true"})
        log.warning("trial %s: the final budget projection turned off more than budget.heavy_projection=%g of a "
                    "domain's budget; it is tagged projection_heavy and left off the front", recorder.run_id,
                    cfg.budget.heavy_projection)
    recorder.log_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), "config.yaml")
    recorder.log_text(_domain_table(result), "domains.csv")
    model_path = os.path.join(os.path.dirname(recorder.spool_path), f"{recorder.run_id}.files", "model.bap")
    bap.save(result.pruned.cpu(), model_path)
    recorder.log_artifact(model_path, "model")
    log_pyfunc_model(recorder, model_path, result.input_sizes)
    recorder.terminate("FINISHED")
    if not recorder.flush(timeout_s=30):
        log.warning("MLflow still unreachable: %d write(s) of run %s wait in %s; run "
                    "`python -m orchestrator.report sync=true` when the server is back",
                    recorder.pending(), recorder.run_id, recorder.spool_path)
    return result


def with_weights(cfg: bap.ExperimentConfig, params: dict[str, Any], weights: Mapping[str, bytes] | None,
                 work: str) -> bap.ExperimentConfig:
    """Write the shipped backbone bytes to a local file and point the config at it."""
    if not weights or params["backbone"] not in weights:
        return cfg
    path = os.path.join(work, "backbone.pt")
    with open(path, "wb") as f:
        f.write(weights[params["backbone"]])
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=path))


def run_trial(
    params: dict[str, Any],
    *,
    sweep: SweepConfig,
    experiment_id: str,
    parent_run_id: str,
    spool_dir: str,
    weights: Mapping[str, bytes] | None = None,
) -> None:
    """Tune's trainable. ``params`` holds the trial's axis values (backbone, domains, sharing, budget, seed);
    ``weights`` maps backbone -> pretrained state-dict bytes, shipped through Ray's object store so workers on
    other machines need no copy of the driver's files."""
    # The trial's worker process is this entry point's own: its process-wide settings are set here.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    retain_freed_memory()
    use_fail_fast_http()
    work = tempfile.mkdtemp(prefix="bap-trial-")
    try:
        cfg = with_weights(trial_config(sweep, params), params, weights, work)
        trial_id = tune.get_context().get_trial_id()
        client = client_for(sweep.mlflow.tracking_uri)
        run_id = find_or_create_child(client, experiment_id, parent_run_id, trial_id, trial_name(params))
        recorder = Recorder(client, run_id, spool_dir)
        done = with_retries(lambda: _finished_metrics(client, run_id), f"reading the MLflow run of trial {trial_id}")
        if done is not None:
            # Tune restored a trial whose run already finished (the driver died before saving that): report
            # the recorded result instead of training and logging it a second time.
            tune.report({**tune_result(done, sweep), "budget": params["budget"], "epoch": cfg.train.epochs,
                         "mlflow_run_id": run_id, "final": 1.0})
            return

        checkpoint_dir = os.path.join(work, "checkpoint")
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as restored:
                shutil.copytree(restored, checkpoint_dir, dirs_exist_ok=True)
            log.info("trial %s resumes from its Tune checkpoint", trial_id)
        resume = os.path.isfile(os.path.join(checkpoint_dir, CHECKPOINT_NAME))

        def report(metrics: dict[str, float]) -> None:
            # The run id in every result: a trial the scheduler stops is tagged so from the driver.
            tune.report({**tune_result(metrics, sweep), "budget": params["budget"], "mlflow_run_id": run_id},
                        checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        result = record_trial(cfg, params, recorder, checkpoint_dir=checkpoint_dir, resume=resume, on_epoch=report,
                              system_metrics_every_s=sweep.mlflow.system_metrics_every_s)
        # The final, pruned-model metrics are the trial's result; Tune keeps the last report. It repeats the last
        # epoch's validation mean: Tune requires a scheduler's metric (ASHA's val/acc_mean) in every result.
        tune.report({**tune_result(result.metrics, sweep), M.VAL_ACC_MEAN: result.history[-1][M.VAL_ACC_MEAN],
                     "budget": params["budget"], "epoch": cfg.train.epochs, "mlflow_run_id": run_id, "final": 1.0})
    finally:
        shutil.rmtree(work, ignore_errors=True)
