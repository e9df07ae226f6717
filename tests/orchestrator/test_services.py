"""Unreachable services fail fast: within 30 s, naming the variable, the address and the fix, creating nothing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytestmark = pytest.mark.slow


def _closed_port() -> int:
    with socket.socket() as s:  # bound then released: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sweep(tmp_path, **env):
    environment = {**os.environ, "RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                   "BAP_CACHE_DIR": str(tmp_path / "cache"), **env}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "budgets=0.5", "model.weights=null"],
                          cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - start


def _assert_fails_fast(done, seconds, message):
    assert done.returncode != 0 and seconds < 30
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unreachable_mlflow_fails_within_30_s_naming_the_variable(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    _assert_fails_fast(*_sweep(tmp_path, MLFLOW_TRACKING_URI=uri),
                       f"MLflow at {uri} (MLFLOW_TRACKING_URI / mlflow.tracking_uri) is unreachable")
    assert not list(tmp_path.glob("runs/ray/*"))  # no sweep folder was started


def test_unreachable_ray_fails_within_30_s_before_any_mlflow_run(tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    _assert_fails_fast(*_sweep(tmp_path, RAY_ADDRESS=address),
                       f"Ray cluster at {address} (RAY_ADDRESS / ray.address) is unreachable")
    if (tmp_path / "mlflow.db").exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_in_a_notebook_an_unreachable_service_is_an_exception_naming_it():
    from orchestrator.config import MlflowConfig, RayConfig, SweepConfig
    from orchestrator.errors import ServiceUnavailable
    from orchestrator.services import check_services

    uri, address = f"http://127.0.0.1:{_closed_port()}", f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ServiceUnavailable, match=r"MLflow at .* \(MLFLOW_TRACKING_URI / mlflow.tracking_uri\)"):
        check_services(SweepConfig(mlflow=MlflowConfig(tracking_uri=uri)))
    with pytest.raises(ServiceUnavailable, match=r"Ray cluster at .* \(RAY_ADDRESS / ray.address\) is unreachable"):
        check_services(SweepConfig(ray=RayConfig(address=address)))


def test_a_cluster_too_small_for_a_trial_is_named_before_any_pretraining(tmp_path):
    # With RAY_ADDRESS the resources are known only once connected: checked then, before the backbone is
    # pretrained (minutes on a real preset) and before any MLflow run.
    port = _closed_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "HOME": str(tmp_path)}
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    # Its own temp dir: the machine-wide /tmp/ray/ray_current_cluster, which a bare ray.init() joins, stays as it is.
    temp_dir = tempfile.mkdtemp(prefix="bapray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0",
                             f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats",
                             "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        environment = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
                       "BAP_CACHE_DIR": str(tmp_path / "cache")}
        deadline = time.monotonic() + 120
        while True:  # the head is up when its GCS port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and head.poll() is None, "ray start --head did not come up"
                time.sleep(1)
        done = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "budgets=0.5", "ray.cpus_per_trial=4",
                               "model.width=0.125"], cwd=tmp_path, env=environment, capture_output=True, text=True,
                              timeout=300)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "ray.cpus_per_trial=4 but the cluster has 1 CPU(s)" in done.stderr
    assert "pretraining" not in done.stderr and not (tmp_path / "cache").exists()
