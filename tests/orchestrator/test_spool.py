"""Recorder's spool when MLflow is down: writes fail at once (no 4-minute HTTP backoff), are kept in order,
and replay exactly once. The cluster version of these faults is tests/cluster/test_stack.py."""

from __future__ import annotations

import os
import time

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.config import MlflowConfig, RayConfig, SweepConfig
from orchestrator.errors import UsageError
from orchestrator.report import report
from orchestrator.spool import DEFAULT_SPOOL, Recorder, scoped
from orchestrator.sweep import sweep_spool_dir
from orchestrator.tracking import FAIL_FAST_HTTP, use_fail_fast_http
from tests.orchestrator.helpers import closed_port_uri


def test_writes_to_an_unreachable_server_are_spooled_at_once(tmp_path):
    recorder = Recorder(MlflowClient(closed_port_uri()), "run0", str(tmp_path))
    start = time.monotonic()
    for step in (1, 2, 3):
        recorder.log_metrics({"val/acc_mean": float(step)}, step=step)
    recorder.terminate()
    # MLflow's own retries (7, exponential backoff) would take about 4 minutes per write.
    assert time.monotonic() - start < 10
    assert recorder.pending() == 4


def test_fail_fast_http_keeps_an_explicit_setting(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    use_fail_fast_http()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


class FlakyClient:
    """Refuses the first ``failures`` writes, then takes them (an MLflow server coming back)."""

    def __init__(self, failures: int) -> None:
        self.failures, self.batches, self.terminated = failures, [], []

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("server down")
        self.batches.append([(m.key, m.step) for m in metrics])

    def set_terminated(self, run_id, status):
        self.terminated.append(status)


def test_recording_leaves_the_process_environment_alone(monkeypatch, tmp_path):
    """A library call changes no process-wide setting, not even while it runs (the entry points opt in)."""
    for key in FAIL_FAST_HTTP:
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    seen = []

    class WatchingClient(FlakyClient):
        def log_batch(self, *args, **kwargs):
            seen.append(dict(os.environ))
            super().log_batch(*args, **kwargs)

    recorder = Recorder(WatchingClient(failures=1), "run", str(tmp_path))
    recorder.log_metrics({"val/acc_mean": 1.0}, step=0)  # refused: spooled
    recorder.log_metrics({"val/acc_mean": 2.0}, step=1)  # joins the spool
    assert recorder.flush()  # replays both
    assert seen == [before] * 3 and dict(os.environ) == before


def test_an_outage_appends_each_write_to_the_spool_and_the_replay_keeps_their_order(tmp_path):
    client = FlakyClient(failures=1)
    recorder = Recorder(client, "run0", str(tmp_path))
    recorder.log_metrics({"a": 0.0}, step=0)  # refused: the spool starts
    spool = os.stat(recorder.spool_path)
    for step in range(1, 200):
        recorder.log_metrics({"a": float(step)}, step=step)
    assert os.stat(recorder.spool_path).st_ino == spool.st_ino  # appended to, never rewritten
    assert client.failures == 0 and client.batches == []  # one request in the outage, not 200
    assert recorder.pending() == 200 and recorder.flush()
    assert client.batches == [[("a", step)] for step in range(200)]


def test_flush_retries_until_the_server_is_back_and_replays_once_in_order(tmp_path):
    client = FlakyClient(failures=4)
    recorder = Recorder(client, "run0", str(tmp_path))
    recorder.log_metrics({"a": 1.0}, step=1)  # refused: spooled
    recorder.log_metrics({"a": 2.0}, step=2)  # refused: spooled behind the first
    recorder.terminate()                       # refused
    assert recorder.pending() == 3
    assert not recorder.flush()                # one try, refused
    assert recorder.flush(timeout_s=5, interval_s=0.01)
    assert client.batches == [[("a", 1)], [("a", 2)]] and client.terminated == ["FINISHED"]
    assert recorder.pending() == 0 and not os.path.exists(recorder.spool_path)
    assert recorder.flush()  # nothing left: nothing is sent twice
    assert client.batches == [[("a", 1)], [("a", 2)]]


@pytest.mark.parametrize("storage, expected", [
    ("/shared/ray", "/shared/ray/mlflow_spool"),
    ("s3://bucket/ray", os.path.abspath(DEFAULT_SPOOL)),
])
def test_sweep_spool_is_beside_shared_storage_or_node_local(storage, expected):
    cfg = SweepConfig(ray=RayConfig(address=None, storage_path=storage))
    assert sweep_spool_dir(cfg) == scoped(expected, cfg.mlflow.tracking_uri, cfg.experiment)


def test_report_sync_replays_where_train_and_sweep_spool_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("exp")
    down = MlflowClient(closed_port_uri())
    # orchestrator.train's spool, and a default sweep's beside its Tune results
    sweep_spool = sweep_spool_dir(SweepConfig(experiment="exp", ray=RayConfig(address=None,
                                                                         storage_path=os.path.abspath("runs/ray")),
                                         mlflow=MlflowConfig(tracking_uri=uri)))
    runs = {}
    for spool in (scoped(os.path.abspath(DEFAULT_SPOOL), uri, "exp"), sweep_spool):
        run_id = client.create_run(experiment_id).info.run_id
        Recorder(down, run_id, spool).log_metrics({"acc_mean": 50.0, "params_total": 10.0}, step=1)
        runs[run_id] = spool
    with pytest.raises(UsageError, match="no finished trial"):  # plain runs, no sweep's: nothing to plot after
        report(experiment="exp", tracking_uri=uri, sync=True)  # no spool_dir: the defaults, from the cwd
    for run_id in runs:
        assert client.get_run(run_id).data.metrics["acc_mean"] == 50.0


def test_the_spool_imports_neither_the_front_nor_the_sweeps_config():
    # A trial worker imports the spool; a sweep's closing reaches it as a callback (orchestrator.front.finish_sweep).
    import subprocess
    import sys

    script = ("import sys, orchestrator.spool; "
              "print(sorted(m for m in ('orchestrator.front', 'orchestrator.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__))))}).stdout
    assert out.strip() == "[]"
