"""One trial recorded in MLflow (orchestrator.trainable.record_trial), against a real store."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from types import SimpleNamespace

import pytest
from ray import tune

import bap
from bap import metrics as M
from orchestrator import trainable
from orchestrator.config import MlflowConfig, SchedulerConfig, SweepConfig
from orchestrator.spool import Recorder
from orchestrator.tracking import RESUMED_TAG, child_runs
from orchestrator.trainable import record_trial, run_trial, tune_metrics

PARAMS = {"budget": 0.5, "method": "union", "backbone": "resnet26", "domains": None, "seed": 0}
TINY = bap.ExperimentConfig(model=bap.ModelConfig(weights=None, width=0.125),
                            data=bap.DataConfig(train_per_class=4, val_per_class=2),
                            train=bap.TrainConfig(epochs=2, steps_per_epoch=1, batch_size=4))


def test_a_trial_records_mlflows_system_metrics_while_it_trains(store, tmp_path):
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    record_trial(TINY, PARAMS, Recorder(client, run_id, str(tmp_path / "spool")),
                 checkpoint_dir=str(tmp_path / "ckpt"), on_epoch=lambda metrics: time.sleep(1.0),
                 system_metrics_every_s=0.25)
    metrics = client.get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    assert len(client.get_metric_history(run_id, "system/cpu_utilization_percentage")) >= 2


def test_no_system_metrics_when_turned_off(store, tmp_path):
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    record_trial(TINY, PARAMS, Recorder(client, run_id, str(tmp_path / "spool")),
                 checkpoint_dir=str(tmp_path / "ckpt"), on_epoch=lambda metrics: time.sleep(0.5))
    assert not [k for k in client.get_run(run_id).data.metrics if k.startswith("system/")]


def test_a_trial_reports_to_tune_only_what_tunes_parts_read_and_everything_to_mlflow(store, tmp_path, monkeypatch):
    # The driver keeps running statistics of every reported metric of every trial for the whole sweep: 60+ metrics
    # a trial grew it by about 200 KB a trial (about 180 MB over a 1,000-trial sweep).
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    sweep = SweepConfig(model=TINY.model, data=TINY.data, train=TINY.train, mlflow=MlflowConfig(tracking_uri=uri),
                        scheduler=SchedulerConfig(name="asha", metric="val/acc/letters"))
    reports = []
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0"))
    monkeypatch.setattr(trainable, "use_fail_fast_http", lambda: None)  # process-wide settings of a worker
    monkeypatch.setattr(trainable, "retain_freed_memory", lambda: None)
    run_trial(PARAMS, sweep=sweep, experiment_id=experiment_id, parent_run_id=parent,
              spool_dir=str(tmp_path / "spool"))
    allowed = tune_metrics(sweep) | {"budget", "mlflow_run_id", "final"}
    assert len(reports) == TINY.train.epochs + 1 and all(set(r) <= allowed for r in reports)
    assert all({"epoch", M.VAL_ACC_MEAN, "val/acc/letters", M.PARAMS_RATIO} <= set(r) for r in reports[:-1])
    assert {M.ACC_MEAN, M.PARAMS_RATIO, M.VAL_ACC_MEAN, "final"} <= set(reports[-1])
    (run,) = child_runs(client, experiment_id, parent)
    logged = set(run.data.metrics)
    assert M.acc_key("letters") in logged and M.PARAMS_TOTAL in logged and len(logged) > 2 * len(allowed)



class WorkerLost(Exception):
    """Stands in for the trial's worker dying inside Tune's report (a killed node)."""


def attempt(monkeypatch, sweep, experiment_id, parent, tmp_path, restored=None, lose_at_epoch=None):
    """One attempt of trial t0 through ``run_trial`` as Tune runs it: ``restored`` is the Tune checkpoint the
    attempt gets (None: a first attempt, or a retry without one); the attempt dies in the report of
    ``lose_at_epoch``, after Tune kept that epoch's checkpoint. Returns the last checkpoint Tune kept."""
    kept = []

    def report(metrics, checkpoint=None):
        if checkpoint is not None:
            kept.append(tune.Checkpoint.from_directory(
                shutil.copytree(checkpoint.path, tempfile.mkdtemp(dir=tmp_path), dirs_exist_ok=True)))
        if metrics.get("epoch") == lose_at_epoch:
            raise WorkerLost

    monkeypatch.setattr(trainable.tune, "report", report)
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: restored)
    monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0"))
    monkeypatch.setattr(trainable, "use_fail_fast_http", lambda: None)
    monkeypatch.setattr(trainable, "retain_freed_memory", lambda: None)
    try:
        run_trial(PARAMS, sweep=sweep, experiment_id=experiment_id, parent_run_id=parent,
                  spool_dir=str(tmp_path / "spool"))
    except WorkerLost:
        pass
    return kept[-1] if kept else None


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_a_retried_trial_records_the_epoch_it_resumed_from_and_a_restart_from_scratch_none(store, tmp_path,
                                                                                          monkeypatch):
    # tests/cluster's killed-node test reads this tag back (a worker's log line may never reach the driver).
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    sweep = SweepConfig(model=TINY.model, data=TINY.data, train=dataclasses.replace(TINY.train, epochs=3),
                        mlflow=MlflowConfig(tracking_uri=uri))

    def the_run():
        (run,) = child_runs(client, experiment_id, parent)  # every attempt finds the trial's one run again
        return run

    checkpoint = attempt(monkeypatch, sweep, experiment_id, parent, tmp_path, lose_at_epoch=2)
    assert the_run().info.status == "FAILED" and RESUMED_TAG not in the_run().data.tags
    # A retry that lost the checkpoint restarts from scratch: its epochs are not logged twice, so only the
    # missing tag tells it from a resume.
    attempt(monkeypatch, sweep, experiment_id, parent, tmp_path, lose_at_epoch=1)
    assert RESUMED_TAG not in the_run().data.tags

    attempt(monkeypatch, sweep, experiment_id, parent, tmp_path, restored=checkpoint)
    run = the_run()
    assert run.info.status == "FINISHED" and run.data.tags[RESUMED_TAG] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, M.VAL_ACC_MEAN)] == [1, 2, 3]
