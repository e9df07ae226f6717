import pytest
from mlflow.tracking import MlflowClient

from benchmarks._sweep_timing import compose
from benchmarks.large_sweep import REQUEST_LINE, measure, parse_args, real_overrides, server_capacity, slope
from orchestrator.config import plan_sweep


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 0.5])
def test_growth_exponent_of_an_exact_power_law(exponent):
    rows = [{"N": n, "cost": 3.0 * n ** exponent} for n in (100, 300, 1000)]
    assert slope(rows, "cost") == pytest.approx(exponent)


def test_a_real_sweep_has_n_trials_and_refuses_an_n_the_budgets_do_not_divide():
    assert len(plan_sweep(compose(real_overrides(12, 2))).trials) == 12
    with pytest.raises(ValueError, match="multiple of 4"):
        real_overrides(10, 2)


def test_server_requests_are_counted_from_its_access_log():
    log = ('INFO:     127.0.0.1:5 - "POST /api/2.0/mlflow/runs/log-batch HTTP/1.1" 200 OK\n'
           'INFO:     127.0.0.1:5 - "GET /api/2.0/mlflow/runs/get?run_id=1 HTTP/1.1" 200 OK\n'
           "INFO:     Application startup complete.\n")
    assert len(REQUEST_LINE.findall(log)) == 2


def test_server_capacity_counts_every_write_its_clients_made(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = server_capacity(uri, clients=2, seconds=0.5)
    client = MlflowClient(uri)
    logged = sum(len(client.get_metric_history(run, "capacity")) for run in result["runs"])
    assert len(result["runs"]) == 2 and logged == result["requests"] > 0
    assert result["requests_per_s"] > 0 and 0 < result["median_ms"] <= result["p95_ms"]


@pytest.mark.parametrize("argv, message", [
    (["--real-trials", "--sizes", "100,302"], "multiple of 4"),
    (["--sizes", "100"], "at least two N"),
    (["--sizes", "100,x"], "whole numbers"),
    (["--capacity", "--real-trials"], "give one of them"),
    (["--postgres-uri", "postgresql://x"], "--capacity only"),
])
def test_bad_arguments_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_default_and_quick_sizes():
    assert parse_args([]).sizes == [100, 300, 1000]
    assert parse_args(["--quick", "--real-trials"]).sizes == [8, 16]


@pytest.mark.slow
def test_the_driver_side_measurement_of_a_small_sweep_sees_its_completions_publishes_closing_and_report(tmp_path):
    row = measure(f"sqlite:///{tmp_path / 'mlflow.db'}", 8, tmp_path)
    assert row["N"] == 8
    # The first completion publishes the front; the ones within PUBLISH_EVERY_S after it only log the summary.
    assert row["publishes"] >= 1 and row["completion_ms"] > 0
    assert row["publish_first_s"] > 0 and row["close_s"] > 0 and row["report_s"] > 0
