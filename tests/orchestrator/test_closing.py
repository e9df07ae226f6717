"""Every run ends in a true state: a failed trial is FAILED with its error, an unfinished one KILLED, and a sweep
whose end MLflow missed is closed by ``orchestrator.report sync=true`` with the status the driver decided."""

from __future__ import annotations

import json
import shlex

import pytest
from mlflow.tracking import MlflowClient

import bap
from orchestrator.closing import close_sweep
from orchestrator.config import MlflowConfig, SweepConfig
from orchestrator.errors import ClosingSpooled
from orchestrator.report import main as report_main
from orchestrator.front import finish_sweep
from orchestrator.report import report
from orchestrator.spool import FINISH_SWEEP, Recorder, scoped, sync_spools
from orchestrator.tracking import ERROR_TAG, PARETO_TAG, find_or_create_child
from orchestrator.trainable import record_trial
from tests.orchestrator.helpers import closed_port_uri

PARAMS = {"budget": 0.5, "method": "union", "backbone": "resnet26", "domains": None, "seed": 0}


def test_a_trial_that_raises_is_failed_with_its_error_and_a_retry_reopens_it(store, tmp_path):
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    run_id = find_or_create_child(client, experiment_id, parent, "t0", "trial")
    recorder = Recorder(client, run_id, str(tmp_path / "spool"))
    # A data root that is not there: training raises before its first step.
    cfg = bap.ExperimentConfig(data=bap.DataConfig(name="decathlon", root=str(tmp_path / "no-data")))
    with pytest.raises(FileNotFoundError):
        record_trial(cfg, PARAMS, recorder, checkpoint_dir=str(tmp_path / "checkpoint"))
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_TAG].startswith("FileNotFoundError:")
    assert find_or_create_child(client, experiment_id, parent, "t0", "trial") == run_id  # Tune's retry
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and ERROR_TAG not in run.data.tags


def test_a_stopped_trial_is_killed(store, tmp_path):
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id

    def stop(metrics):  # Tune stops a trial by SystemExit in its thread; Ctrl-C is a KeyboardInterrupt
        raise KeyboardInterrupt

    cfg = bap.ExperimentConfig(model=bap.ModelConfig(weights=None, width=0.125),
                               data=bap.DataConfig(train_per_class=4, val_per_class=2),
                               train=bap.TrainConfig(epochs=2, steps_per_epoch=1, batch_size=4))
    with pytest.raises(KeyboardInterrupt):
        record_trial(cfg, PARAMS, Recorder(client, run_id, str(tmp_path / "spool")),
                     checkpoint_dir=str(tmp_path / "ckpt"), on_epoch=stop)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and ERROR_TAG not in run.data.tags


def test_mlflow_down_at_the_end_leaves_the_closing_spooled_and_report_sync_does_it(store, two_trial_sweep, tmp_path):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    spool = tmp_path / "spool"
    down_uri = closed_port_uri()
    trial = Recorder(MlflowClient(down_uri), done, str(spool))
    trial.set_tags({"late": "write"})  # a trial's last write that MLflow missed
    cfg = SweepConfig(experiment="exp", mlflow=MlflowConfig(tracking_uri=down_uri, end_wait_s=0))
    down = MlflowClient(down_uri)
    with pytest.raises(ClosingSpooled) as spooled:
        close_sweep(cfg, down, experiment_id, parent, Recorder(down, parent, str(spool)), "FINISHED", {},
                    str(spool))
    assert spooled.value.exit_code == 3
    line = str(spooled.value)
    assert "unreachable at the end of the sweep" in line and "(FINISHED)" in line and str(spool) in line
    command = line.split("run: ", 1)[1]
    assert command == (f"python -m orchestrator.report experiment=exp mlflow.tracking_uri={down_uri} "
                       f"spool_dir={spool} sync=true")
    with open(spool / f"{parent}.jsonl") as f:
        assert [json.loads(line)["op"] for line in f] == [FINISH_SWEEP]
    assert client.get_run(parent).info.status == "RUNNING"  # nothing reached the store

    # The server is back (here: the same store, reached directly): the printed command, pointed at it.
    report_main([arg.replace(down_uri, uri) for arg in shlex.split(command)[3:]])
    assert client.get_run(done).data.tags["late"] == "write"  # the trial's write first, then the closing
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(unfinished).info.status == "KILLED"
    assert client.get_run(done).data.tags[PARETO_TAG] == "true"
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent)}
    assert sync_spools(uri, str(spool), finish_sweep) == {}  # replayed once: nothing left to repeat


def test_the_closing_waits_for_the_trials_spools(store, two_trial_sweep, tmp_path):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    spool = tmp_path / "spool"
    down = MlflowClient(closed_port_uri())
    Recorder(down, unfinished, str(spool)).terminate("FINISHED")  # it did finish; MLflow missed the news
    Recorder(down, parent, str(spool)).finish_sweep(experiment_id, "FINISHED")
    # A sync that cannot replay the trial's spool leaves the closing too (it would mark that trial KILLED).
    broken = tmp_path / "broken"
    broken.mkdir()
    (spool / f"{unfinished}.jsonl").rename(broken / f"{unfinished}.jsonl")
    (spool / f"{unfinished}.jsonl").write_text(json.dumps({"op": "artifact", "path": "/nonexistent",
                                                            "artifact_path": None}) + "\n")
    assert sync_spools(uri, str(spool), finish_sweep) == {unfinished: 1, parent: 1}
    (broken / f"{unfinished}.jsonl").replace(spool / f"{unfinished}.jsonl")
    assert sync_spools(uri, str(spool), finish_sweep) == {unfinished: 0, parent: 0}
    assert client.get_run(unfinished).info.status == "FINISHED"
    assert client.get_run(parent).info.status == "FINISHED"


def _foreign_spool(spool):
    """A spool no sync can replay here: the run of another store (this one has no such run)."""
    (spool / "0123456789abcdef0123456789abcdef.jsonl").write_text(
        json.dumps({"op": "tags", "tags": {"from": "another store"}}) + "\n")


def test_a_spool_of_another_store_or_sweep_never_holds_a_closing_back(store, two_trial_sweep, tmp_path):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    spool = tmp_path / "spool"
    down = MlflowClient(closed_port_uri())
    Recorder(down, unfinished, str(spool)).terminate("FINISHED")
    Recorder(down, parent, str(spool)).finish_sweep(experiment_id, "FINISHED")
    _foreign_spool(spool)
    reasons = {}
    left = sync_spools(uri, str(spool), finish_sweep, reasons)
    assert left == {unfinished: 0, parent: 0, "0123456789abcdef0123456789abcdef": 1}
    assert client.get_run(parent).info.status == "FINISHED"  # closed, although another spool is pending
    assert "not found" in reasons["0123456789abcdef0123456789abcdef"]


def test_spools_are_kept_per_store_and_experiment():
    folders = {scoped("/runs/spool", uri, experiment) for uri in ("sqlite:///a.db", "http://mlflow:5000")
               for experiment in ("vd", "vd/2", "smoke")}
    assert len(folders) == 6 and all(f.startswith("/runs/spool/") for f in folders)
    assert scoped("/runs/spool", "sqlite:///a.db", "vd") == scoped("/runs/spool", "sqlite:///a.db", "vd")


def test_report_sync_exits_non_zero_naming_what_is_pending_while_a_closing_stays_open(store, two_trial_sweep,
                                                                                       tmp_path, capsys):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    spool = tmp_path / "spool"
    Recorder(MlflowClient(closed_port_uri()), parent, str(spool)).finish_sweep(experiment_id, "FINISHED")
    # its own trial's spool, which cannot replay (an artifact that is gone): the closing must wait for it
    (spool / f"{unfinished}.jsonl").write_text(json.dumps({"op": "artifact", "path": "/nonexistent",
                                                            "artifact_path": None}) + "\n")
    with pytest.raises(ClosingSpooled) as pending:
        report("exp", uri, sync=True, spool_dir=str(spool))
    assert pending.value.exit_code == 3
    message = str(pending.value)
    assert f"run {parent}: 1 write(s); waits for its trial run(s) {unfinished}" in message
    assert f"run {unfinished}: 1 write(s);" in message and "RUNNING" in message
    assert "2 write(s) still pending" in capsys.readouterr().out
    assert client.get_run(parent).info.status == "RUNNING"


class FailsOnce:
    """An MLflow client whose first ``search_runs`` fails (the server restarting at that moment)."""

    def __init__(self, client):
        self.client, self.failed = client, False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def search_runs(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise ConnectionError("restarting")
        return self.client.search_runs(*args, **kwargs)


def test_a_server_back_just_in_time_still_gives_the_true_front(store, two_trial_sweep, tmp_path):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    flaky = FailsOnce(client)
    cfg = SweepConfig(experiment="exp", mlflow=MlflowConfig(tracking_uri=uri, end_wait_s=0))
    table = close_sweep(cfg, flaky, experiment_id, parent,
                        Recorder(flaky, parent, str(tmp_path / "spool"), finish_sweep), "FINISHED", {},
                        str(tmp_path / "spool"))
    assert [row["run_id"] for row in table.rows] == [done]  # the front it closed with, not an empty table
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(unfinished).info.status == "KILLED"
