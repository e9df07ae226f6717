"""``orchestrator.train`` runs one trial; what is not one trial is refused before anything is recorded."""

import pytest

from orchestrator.config_store import compose_sweep_config
from orchestrator.errors import UsageError
from orchestrator.train import run_one


def test_a_search_is_refused_with_the_way_to_run_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="search=optuna picks many, so run it with orchestrator.sweep"):
        run_one(compose_sweep_config(["search=optuna"]))
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no spool
