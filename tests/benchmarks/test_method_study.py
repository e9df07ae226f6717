"""benchmarks/method_study.py: the analysis on hand-made study records (the MLflow read-back is the product's)."""

import math

import numpy as np
import pytest

from benchmarks import method_study as ms

# method -> budget -> (accuracy, params_ratio) of seed 0; seed s adds s to every accuracy (shared seed effects)
CELLS = {
    "none": {1.0: (60, 1.05), 0.5: (58, 0.95), 0.25: (50, 0.85)},
    "union": {1.0: (60, 1.05), 0.5: (58, 0.65), 0.25: (52, 0.45)},
    "random_shared": {1.0: (60, 1.05), 0.5: (47, 0.45), 0.25: (35, 0.25)},
}


def records(cells=CELLS, seeds=(0, 1, 2, 3, 4), noise=0.0):
    rng = np.random.default_rng(0)
    out = []
    for method, by_budget in cells.items():
        for budget, (acc, params) in by_budget.items():
            for s in seeds:
                out.append({"run_id": f"{method}-{budget}-{s}", "sharing": method, "budget": budget, "seed": s,
                            "acc_mean": acc + s + noise * rng.standard_normal(), "params_ratio": params,
                            "macs_ratio": params, "budget_usage_min": budget - 0.001, "overlap": 2.0,
                            "status": "FINISHED"})
    return out


def test_cells_front_and_interpolation():
    study = ms.Study(records())
    assert study.methods == ["none", "union", "random_shared"] and study.budgets == [1.0, 0.5, 0.25]
    everyone = np.arange(5)
    means = {p["budget"]: p for p in study.means("union", everyone)}
    assert means[0.5]["accuracy"] == pytest.approx(60.0) and means[0.5]["cost"] == pytest.approx(0.65)
    # random_shared between (0.45, 49) and (1.05, 62): at 0.65 one third of the way
    assert study.accuracy_at("random_shared", 0.65, everyone) == pytest.approx(49 + (62 - 49) / 3)
    assert math.isnan(study.accuracy_at("random_shared", 0.1, everyone))  # outside its range: no extrapolation


def test_paired_intervals_see_through_shared_seed_noise_and_checks_read_them():
    result = ms.analyse(ms.Study(records()), default="union", resamples=300)
    low, high = result["hv_diff"]["none"][1:]
    assert 0 < low <= high  # union dominates none at every budget: paired, the +s seed effect cancels
    checks = {name: ok for name, ok, _ in result["checks"]}
    assert checks["hypervolume of union above none's (95% CI of the difference above 0)"]
    assert all(ok for name, ok in checks.items() if "params_ratio at least" in name)  # 0.30 and 0.40 below none
    # at equal params union beats random_shared by 60 - 53.33 = 6.7 at 0.5 (random_shared interpolated at 0.65)
    estimate, low, high = result["equal_params"][("random_shared", 0.5)]
    assert estimate == pytest.approx(60 - (49 + 13 / 3))
    assert low == pytest.approx(estimate) and high == pytest.approx(estimate)  # paired: seed effects cancel
    assert all(ok for name, ok in checks.items() if "within 0.03 below" in name)


def test_a_lost_claim_fails_with_its_interval():
    worse = {**CELLS, "union": {1.0: (60, 1.05), 0.5: (40, 0.65), 0.25: (30, 0.45)}}
    result = ms.analyse(ms.Study(records(worse, noise=2.0)), default="union", resamples=300)
    checks = {name: ok for name, ok, _ in result["checks"]}
    assert not checks["hypervolume of union above random_shared's (95% CI of the difference above 0)"]
    assert not any(ok for name, ok in checks.items() if "points above random_shared" in name)
    text = ms.report(ms.Study(records(worse)), result, "union")
    assert "FAIL: hypervolume of union above random_shared's" in text and "[" in text


def test_undershot_budget_fails_its_check():
    recs = records()
    for r in recs:
        if r["sharing"] == "union" and r["budget"] == 0.25:
            r["budget_usage_min"] = 0.20
    checks = {name: ok for name, ok, _ in ms.analyse(ms.Study(recs), default="union", resamples=50)["checks"]}
    assert not checks["union: every domain ends within 0.03 below its budget"]
    assert checks["none: every domain ends within 0.03 below its budget"]
