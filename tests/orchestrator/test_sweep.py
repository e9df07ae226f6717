"""The sweep driver's own steps (``orchestrator.sweep.run_sweep``); the whole command runs in test_sweep_e2e.py."""

import pytest

from orchestrator import sweep
from orchestrator.config_store import compose_sweep_config
from orchestrator.validate import SweepConfigError


class Stop(Exception):
    """Raised where the driver would create the sweep's first MLflow run: what comes before is under test."""


def test_a_sweep_is_planned_and_validated_once_and_checked_against_the_cluster_it_joined(tmp_path, monkeypatch):
    calls = []

    def counted(name, fn):
        return lambda *args, **kwargs: (calls.append(name), fn(*args, **kwargs))[1]

    monkeypatch.setattr(sweep, "plan_sweep", counted("plan", sweep.plan_sweep))
    monkeypatch.setattr(sweep, "validate", counted("validate", sweep.validate))
    monkeypatch.setattr(sweep, "check_cluster", counted("cluster", sweep.check_cluster))
    monkeypatch.setattr(sweep, "start_ray", lambda cfg: None)  # a cluster of one CPU stands in for Ray
    monkeypatch.setattr(sweep.ray, "cluster_resources", lambda: {"CPU": 1.0})
    monkeypatch.setattr(sweep, "sweep_spool_dir", lambda cfg: (_ for _ in ()).throw(Stop()))
    cfg = compose_sweep_config(["model.weights=null", f"ray.storage_path={tmp_path}/ray",
                                f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    with pytest.raises(Stop):
        sweep.run_sweep(cfg)
    assert calls == ["plan", "validate", "cluster"]


def test_a_trial_the_joined_cluster_cannot_place_is_refused_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "start_ray", lambda cfg: None)
    cfg = compose_sweep_config(["model.weights=null", "ray.cpus_per_trial=1", f"ray.storage_path={tmp_path}/ray",
                                f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    monkeypatch.setattr(sweep.ray, "cluster_resources", lambda: {"CPU": 0.5})
    with pytest.raises(SweepConfigError, match=r"ray.cpus_per_trial=1 but the cluster has 0.5 CPU"):
        sweep.run_sweep(cfg)
    assert not (tmp_path / "ray").exists()
