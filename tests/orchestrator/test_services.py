"""Unreachable services fail fast: within 30 s, naming the variable, the address and the fix, creating nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
