"""benchmarks/method_study.py: the analysis on hand-made study records (the MLflow read-back is the product's)."""

import math

import numpy as np
import pytest

from benchmarks import method_study as ms

# method -> budget -> (accuracy, params_ratio) on unit (0, 0); unit (draw, seed) adds draw + seed to every
# accuracy (effects every method shares, which pairing must cancel)
CELLS = {
    "none": {1.0: (60, 1.05), 0.5: (58, 0.95), 0.25: (50, 0.85)},
    "union": {1.0: (60, 1.05), 0.5: (58, 0.65), 0.25: (52, 0.45)},
    "random_shared": {1.0: (60, 1.05), 0.5: (47, 0.45), 0.25: (35, 0.25)},
    "magnitude_annealed": {1.0: (60, 1.05), 0.5: (50, 0.45), 0.25: (45, 0.25)},
}
UNITS = [(d, s) for d in (0, 1, 2, 3) for s in (0, 1, 2)]


def records(cells=CELLS, units=UNITS, noise=0.0):
    rng = np.random.default_rng(0)
    out = []
    for method, by_budget in cells.items():
        for budget, (acc, params) in by_budget.items():
            for draw, seed in units:
                out.append({"run_id": f"{method}-{budget}-{draw}-{seed}", "sharing": method, "budget": budget,
                            "draw": draw, "seed": seed, "acc_mean": acc + draw + seed + noise * rng.standard_normal(),
                            "params_ratio": params, "macs_ratio": params, "budget_usage_min": budget - 0.001,
                            "overlap": 2.0, "status": "FINISHED"})
    return out


def test_units_points_and_interpolation():
    study = ms.Study(records())
    assert study.methods == ["none", "union", "random_shared", "magnitude_annealed"]
    assert study.budgets == [1.0, 0.5, 0.25] and study.draws == [0, 1, 2, 3] and len(study.units) == 12
    points = {p["budget"]: p for p in study.points("union", (1, 2))}
    assert points[0.5]["accuracy"] == 61 and points[0.5]["cost"] == 0.65
    # random_shared between (0.45, 47) and (1.05, 60) on unit (0, 0): at 0.65 one third of the way
    assert study.accuracy_at("random_shared", 0.65, (0, 0)) == pytest.approx(47 + 13 / 3)
    assert math.isnan(study.accuracy_at("random_shared", 0.1, (0, 0)))  # outside its range: no extrapolation


def test_paired_t_intervals_cancel_shared_unit_effects_and_checks_read_lower_bounds():
    study = ms.Study(records())
    result = ms.analyse(study, study.units, default="union")
    mean, low, high, n = result["hv_diff"]["none"]
    assert n == 12 and 0 < low < mean < high
    checks = {name: ok for name, ok, _ in result["checks"]}
    assert checks["HV(union) - HV(none) > 0 (lower bound)"]
    # the cheap baselines reach 0.25 of the params: union (0.45 at best) loses the fixed-reference hypervolume ...
    assert not checks["HV(union) - HV(random_shared) > 0 (lower bound)"]
    # ... and on the common range [0.45, 1.5] beats it
    assert checks["HV(union) - HV(random_shared) over the params range both cover > 0 (lower bound)"]
    # at 0.5 union (58 at 0.65) against the best baseline there: magnitude_annealed at 0.65, 50 + 10/3
    mean, low, high, _ = result["equal_params"][0.5]
    assert mean == pytest.approx(58 - (50 + 10 / 0.6 * 0.2)) == pytest.approx(low) == pytest.approx(high)  # paired
    assert ms.best_baseline_gap(study, "union", 0.5, (0, 0))[1] == "magnitude_annealed"
    assert checks["budget 0.5: union at least 2 points above the best baseline at its params_ratio (lower bound)"]
    assert all(ok for name, ok in checks.items() if "within 0.03 below" in name)


def test_a_noisy_small_margin_fails_on_its_lower_bound():
    close = {**CELLS, "union": {1.0: (60, 1.05), 0.5: (56.5, 0.65), 0.25: (46, 0.45)}}
    study = ms.Study(records(close, noise=3.0))
    result = ms.analyse(study, study.units, default="union")
    mean, low, _, _ = result["equal_params"][0.5]
    assert mean > ms.EQUAL_PARAMS_POINTS > low  # the estimate passes, its lower bound does not
    checks = {name: ok for name, ok, _ in result["checks"]}
    assert not checks["budget 0.5: union at least 2 points above the best baseline at its params_ratio (lower bound)"]


def test_report_splits_choice_and_judged_draws_with_a_win_table():
    study = ms.Study(records())
    roles = {"judged": [u for u in study.units if u[0] not in ms.CHOICE_DRAWS],
             "choice": [u for u in study.units if u[0] in ms.CHOICE_DRAWS]}
    results = {role: ms.analyse(study, units, default="union") for role, units in roles.items()}
    assert results["judged"]["hv_diff"]["none"][3] == 6
    text = ms.report(study, results, "union")
    assert "### Judged draws" in text and "### Choice draws" in text
    rows = ms.win_rows(study, "union")
    assert {(r["draw"], r["budget"]) for r in rows} == {(d, b) for d in range(4) for b in (0.5, 0.25)}
    assert {r["role"] for r in rows if r["draw"] in ms.CHOICE_DRAWS} == {"choice"}
    assert all(r["wins"] == "3/3" for r in rows if r["budget"] == 0.5)
    assert ms.hv_margin_low(results["judged"]) < 0  # union loses the fixed-reference HV to the cheap baselines


def test_undershot_budget_fails_its_check():
    recs = records()
    for r in recs:
        if r["sharing"] in ("union", "magnitude_annealed") and r["budget"] == 0.25:
            r["budget_usage_min"] = 0.20
    study = ms.Study(recs)
    checks = {name: ok for name, ok, _ in ms.analyse(study, study.units, default="union")["checks"]}
    assert not checks["union: every domain ends within 0.03 below its budget"]
    assert not checks["magnitude_annealed: every domain ends within 0.03 below its budget"]
    assert checks["none: every domain ends within 0.03 below its budget"]
    assert not any("random_shared: every domain" in name for name in checks)  # one-shot: met by construction
