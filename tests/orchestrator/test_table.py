"""The Pareto table: per-group fronts on configuration means over seeds, computed once for all its readers."""

import pytest

from orchestrator import table as table_module
from orchestrator.front import front_rows, summary_metrics
from orchestrator.plots import write_pareto_report
from orchestrator.table import SUMMARISED, ParetoTable
from tests.orchestrator.helpers import RECORDS, SEEDS, record


def test_table_flags_per_group_and_order():
    rows = ParetoTable(RECORDS).rows
    assert [r["run_id"] for r in rows] == ["r4", "r2", "r3", "r1", "failed", "r5"]
    flags = {r["run_id"]: (r["pareto_params"], r["pareto_macs"]) for r in rows}
    assert flags == {"r1": (True, True), "r2": (True, True), "r3": (False, False), "r4": (True, False),
                     "r5": (True, True), "failed": (False, False)}


def test_a_heavily_projected_trial_stays_off_the_front_unless_its_flag_is_cleared():
    heavy = {**record("heavy", 0.25, "union", 95.0, 0.20), "projection_heavy": True}
    rows = {r["run_id"]: r for r in ParetoTable([*RECORDS, heavy]).rows}
    assert not rows["heavy"]["pareto_params"]
    assert rows["r4"]["pareto_params"] and rows["r2"]["pareto_params"]  # what it would have dominated stays
    rows = {r["run_id"]: r for r in ParetoTable([*RECORDS, {**heavy, "projection_heavy": False}]).rows}
    assert rows["heavy"]["pareto_params"] and not rows["r4"]["pareto_params"]


def test_seeds_of_a_configuration_make_one_front_point_with_its_interval():
    rows = {r["run_id"]: r for r in ParetoTable(SEEDS).rows}
    assert all(rows[f"u{s}"]["pareto_params"] for s in range(3))  # mean 84 at 0.60: the front
    assert not any(rows[f"n{s}"]["pareto_params"] for s in range(3))  # mean 79 at 0.62: dominated
    u = rows["u0"]
    assert u["seeds"] == 3 and u["acc_mean_mean"] == 84.0
    half = 4.302653 * 4.0 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(n)
    assert u["acc_mean_low"] == pytest.approx(84 - half) and u["acc_mean_high"] == pytest.approx(84 + half)
    single = ParetoTable(RECORDS).rows[0]
    assert single["seeds"] == 1 and single["acc_mean_low"] is None  # no interval from one seed


def test_one_publish_summarises_each_configuration_once(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(table_module, "mean_ci", lambda values: calls.append(values) or (sum(values) / len(values),
                                                                                      None, None))
    table = ParetoTable([*RECORDS, *SEEDS])
    write_pareto_report(table, str(tmp_path), include_plotlyjs=False)  # both plots, the page and the CSV
    front_rows(table)
    summary_metrics(table, failed=0, stopped=0)
    configurations = len(table.configurations)
    assert configurations == 6 and len(calls) <= configurations * len(SUMMARISED)
