"""One trial recorded in MLflow (orchestrator.trainable.record_trial), against a real store."""

from __future__ import annotations

import time

import bap
from orchestrator.spool import Recorder
from orchestrator.trainable import record_trial

PARAMS = {"budget": 0.5, "sharing": "union", "backbone": "resnet26", "domains": None, "seed": 0}
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
