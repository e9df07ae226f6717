"""benchmarks/pareto_quality.py: pure logic."""

import pytest

from benchmarks import pareto_quality as pq


def test_plan_repeats_only_the_main_comparison_and_skips_the_duplicate_random_run():
    quick, full = pq.plan(True), pq.plan(False)
    assert len(set(quick)) == len(quick) and (1.0, "random-shared", 0) not in quick
    assert {(b, m) for b, m, _ in quick} == {(b, m) for b, m, _ in full}
    assert all(seed == 0 for _, _, seed in quick)
    extra = [r for r in full if r[2] != 0]
    assert sorted(extra) == sorted((pq.REPEATED_BUDGET, m, s) for m in pq.REPEATED_METHODS for s in pq.EXTRA_SEEDS)


def _cells(bap_ratio=0.6, none_ratio=0.95, bap_acc=50.0, none_acc=51.0, random_acc=30.0):
    values = {"int": (bap_acc, bap_ratio), "union": (bap_acc, bap_ratio), "jaccard": (bap_acc, bap_ratio),
              "none": (none_acc, none_ratio), "random": (random_acc, 0.98), "random-shared": (random_acc, 0.5)}
    rows = [{"budget": b, "method": m, "seed": 0, "acc_mean": acc, "params_ratio": ratio, "macs_ratio": ratio,
             "max B_d": b} for b in pq.BUDGETS for m, (acc, ratio) in values.items()]
    return rows, pq.summarize(rows)


def test_summarize_averages_a_cells_seeds():
    rows = [{"budget": 0.5, "method": "none", "acc_mean": a, "params_ratio": p, "macs_ratio": p}
            for a, p in ((40.0, 0.8), (50.0, 0.9))]
    cell = pq.summarize(rows)[(0.5, "none")]
    assert cell["runs"] == 2 and cell["acc_mean"] == 45.0 and cell["params_ratio"] == pytest.approx(0.85)


def test_checks_pass_where_the_claim_holds_and_the_gap_is_nones_minus_baps():
    rows, cells = _cells()
    checks = pq.claim_checks(rows, cells)
    assert all(checks.values()) and len(checks) == 1 + 6 * 3
    assert pq.params_gap(cells) == pytest.approx(0.35)


def test_checks_name_the_parts_of_the_claim_that_fail():
    rows, cells = _cells(none_ratio=0.8, bap_acc=40.0)
    failed = {name for name, ok in pq.claim_checks(rows, cells).items() if not ok}
    assert any("none needs nearly all" in name for name in failed)
    assert any("acc_mean >= none's" in name for name in failed)
    assert not any("smaller than the backbone" in name for name in failed)
    rows[0]["max B_d"] = rows[0]["budget"] + 0.01
    assert not pq.claim_checks(rows, cells)["every run: each domain's binarised B_d <= budget"]
