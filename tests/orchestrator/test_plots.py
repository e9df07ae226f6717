import csv

from bap.config import BASELINES, SHARING_LOSSES, SHARING_OPTIONS
from orchestrator.plots import FIELDS, METHOD_COLORS, METHOD_MARKERS, write_pareto_report
from orchestrator.table import ParetoTable
from tests.orchestrator.helpers import RECORDS, SEEDS


def test_report_files_and_csv_content(tmp_path):
    paths = write_pareto_report(ParetoTable(RECORDS), str(tmp_path / "report"), include_plotlyjs=False)
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
    paths = write_pareto_report(ParetoTable(failed), str(tmp_path), include_plotlyjs=False)
    assert all((tmp_path / name).exists() for name in paths)


def test_a_configuration_of_several_seeds_is_drawn_with_its_interval(tmp_path):
    paths = write_pareto_report(ParetoTable(SEEDS), str(tmp_path), include_plotlyjs=False)
    assert "error_y" in (tmp_path / "pareto.html").read_text() and paths["pareto_params.png"]


def test_every_method_bap_knows_has_its_own_colour_and_every_baseline_its_own_marker():
    assert set(METHOD_COLORS) == set(SHARING_OPTIONS) == set(METHOD_MARKERS)
    assert len(set(METHOD_COLORS.values())) == len(SHARING_OPTIONS)  # the *_dway losses too
    shapes = [METHOD_MARKERS[b] for b in BASELINES]
    assert len(set(shapes)) == len(BASELINES) and all(METHOD_MARKERS[m] == ("o", "circle") for m in SHARING_LOSSES)
