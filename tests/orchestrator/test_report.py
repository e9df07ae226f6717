"""``python -m orchestrator.report``: its command line. What it publishes is tested with the front
(test_front.py), its replay of the spools with them (test_spool.py), its closing of a spooled sweep in
test_closing.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import report as report_module
from orchestrator.errors import UsageError
from orchestrator.report import report

REPO = Path(__file__).resolve().parents[2]


def test_the_report_reads_hydra_overrides_and_its_old_flags_with_a_warning(monkeypatch):
    seen = []
    monkeypatch.setattr(report_module, "report", lambda *args, **kwargs: seen.append((args, kwargs)))
    argv = list(sys.argv)
    report_module.main(["experiment=exp", "mlflow.tracking_uri=sqlite:///a.db", "sync=true", "spool_dir=/s"])
    with pytest.warns(FutureWarning, match="--sync is deprecated; write sync=true"):
        report_module.main(["experiment=exp", "tracking_uri=sqlite:///a.db", "--sync", "spool_dir=/s"])
    assert seen == [(("exp", "sqlite:///a.db", True, "/s"), {"include_heavy": False, "model_registry": None})] * 2
    assert sys.argv == argv  # Hydra parsed the rewritten arguments; the process's own are back


@pytest.mark.parametrize("args, message", [
    ([], "experiment is required: python -m orchestrator.report experiment=NAME"),
    (["experiment=x", "budgets=0.5"], "Could not override 'budgets'"),  # a sweep key means nothing to a report
])
@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_a_report_without_an_experiment_or_with_a_sweep_key_exits_2_naming_it(tmp_path, args, message):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.report", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []


def test_an_unknown_experiment_is_an_error_naming_the_known_ones(store):
    uri, client, _ = store
    with pytest.raises(UsageError, match=r"experiment='nope' is not in .*; known: .*exp") as error:
        report(experiment="nope", tracking_uri=uri)
    assert error.value.exit_code == 1
    with pytest.raises(UsageError, match="experiment 'exp' has no finished trial yet"):
        report(experiment="exp", tracking_uri=uri)
