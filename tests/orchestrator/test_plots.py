import csv

import pytest

from orchestrator.plots import FIELDS, pareto_table, write_pareto_report


def record(run_id, budget, sharing, acc, ratio, domain_set="all", backbone="resnet26"):
    return {
        "run_id": run_id, "budget": budget, "sharing": sharing, "backbone": backbone, "domain_set": domain_set,
        "acc_mean": acc, "params_total": int(ratio * 6e6), "params_ratio": ratio,
        "macs_mean": ratio * 8e8, "macs_ratio": ratio if run_id != "r2" else 0.2,
    }


RECORDS = [
    record("r1", 1.0, "none", 90.0, 1.05),
    record("r2", 0.5, "jaccard", 85.0, 0.55),
    record("r3", 0.5, "none", 80.0, 0.70),  # dominated by r2 on both costs
    record("r4", 0.25, "jaccard", 75.0, 0.30),
    record("r5", 0.25, "int", 70.0, 0.30, domain_set="digits+faces"),
    {**record("failed", 0.5, "union", 0.0, 0.0), "acc_mean": None, "params_ratio": None, "macs_ratio": None},
]


def test_table_flags_per_group_and_order():
    rows = pareto_table(RECORDS)
    assert [r["run_id"] for r in rows] == ["r4", "r2", "r3", "r1", "failed", "r5"]
    flags = {r["run_id"]: (r["pareto_params"], r["pareto_macs"]) for r in rows}
    assert flags == {"r1": (True, True), "r2": (True, True), "r3": (False, False), "r4": (True, False),
                     "r5": (True, True), "failed": (False, False)}


def test_report_files_and_csv_content(tmp_path):
    paths = write_pareto_report(RECORDS, str(tmp_path / "report"), include_plotlyjs=False)
    assert sorted(paths) == ["pareto.csv", "pareto.html", "pareto_macs.png", "pareto_params.png"]
    for name in ("pareto_params.png", "pareto_macs.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pareto front" in (tmp_path / "report" / "pareto.html").read_text()
    with open(tmp_path / "report" / "pareto.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        ci = [f"{k}_{s}" for k in ("acc_mean", "macs_ratio", "params_ratio") for s in ("high", "low", "mean")]
        assert reader.fieldnames == [*FIELDS, "pareto_params", "pareto_macs", *ci, "seeds"]
        rows = list(reader)
    by_id = {r["run_id"]: r for r in rows}
    assert len(rows) == len(RECORDS)
    assert by_id["r2"]["pareto_params"] == "True" and by_id["r3"]["pareto_params"] == "False"
    assert by_id["r4"]["pareto_macs"] == "False"
    assert float(by_id["r2"]["acc_mean"]) == 85.0 and by_id["r2"]["sharing"] == "jaccard"
    assert by_id["failed"]["acc_mean"] == ""


def test_report_with_no_completed_trial(tmp_path):
    failed = [RECORDS[-1]]
    paths = write_pareto_report(failed, str(tmp_path), include_plotlyjs=False)
    assert all((tmp_path / name).exists() for name in paths)


def test_a_heavily_projected_trial_stays_off_the_front_unless_its_flag_is_cleared():
    heavy = {**record("heavy", 0.25, "union", 95.0, 0.20), "projection_heavy": True}
    rows = {r["run_id"]: r for r in pareto_table([*RECORDS, heavy])}
    assert not rows["heavy"]["pareto_params"]
    assert rows["r4"]["pareto_params"] and rows["r2"]["pareto_params"]  # what it would have dominated stays
    rows = {r["run_id"]: r for r in pareto_table([*RECORDS, {**heavy, "projection_heavy": False}])}
    assert rows["heavy"]["pareto_params"] and not rows["r4"]["pareto_params"]


def test_seeds_of_a_configuration_make_one_front_point_with_its_interval(tmp_path):
    seeds = [{**record(f"u{s}", 0.5, "union", acc, 0.60), "seed": s} for s, acc in enumerate((80.0, 84.0, 88.0))]
    # one lucky seed of `none` beats union's mean, but not none's own mean
    lucky = [{**record(f"n{s}", 0.5, "none", acc, 0.62), "seed": s} for s, acc in enumerate((95.0, 70.0, 72.0))]
    rows = {r["run_id"]: r for r in pareto_table([*seeds, *lucky])}
    assert all(rows[f"u{s}"]["pareto_params"] for s in range(3))  # mean 84 at 0.60: the front
    assert not any(rows[f"n{s}"]["pareto_params"] for s in range(3))  # mean 79 at 0.62: dominated
    u = rows["u0"]
    assert u["seeds"] == 3 and u["acc_mean_mean"] == 84.0
    half = 4.302653 * 4.0 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(n)
    assert u["acc_mean_low"] == pytest.approx(84 - half) and u["acc_mean_high"] == pytest.approx(84 + half)
    single = pareto_table(RECORDS)[0]
    assert single["seeds"] == 1 and single["acc_mean_low"] is None  # no interval from one seed
    paths = write_pareto_report([*seeds, *lucky], str(tmp_path), include_plotlyjs=False)
    assert "error_y" in (tmp_path / "pareto.html").read_text() and paths["pareto_params.png"]
