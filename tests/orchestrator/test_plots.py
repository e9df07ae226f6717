import csv

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
        assert reader.fieldnames == [*FIELDS, "pareto_params", "pareto_macs"]
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
