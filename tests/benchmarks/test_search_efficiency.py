"""benchmarks/search_efficiency.py's analysis on hand-made trials (the sweeps themselves are the product's)."""

import pytest

from bap import metrics as M
from benchmarks import search_efficiency as se
from benchmarks._common import machine_info


def trial(acc, cost, epochs=4, stopped=False):
    record = {"domain_set": "all", "backbone": "resnet26", "sharing": "union", "budget": cost, "seed": 0,
              M.ACC_MEAN: None if stopped else acc, M.PARAMS_TOTAL: None if stopped else 1000.0 * cost,
              M.PARAMS_RATIO: None if stopped else cost, M.MACS_RATIO: cost, M.PROJECTION_HEAVY: False}
    return {"record": record, "epochs": epochs, "stopped": stopped}


def test_the_curve_counts_every_trial_and_epoch_and_only_finished_trials_move_the_front():
    trials = [trial(50.0, 0.5), trial(0.0, 0.3, epochs=1, stopped=True), trial(60.0, 0.4)]
    points = se.curve(trials)
    assert [(p["trials"], p["trial_epochs"]) for p in points] == [(1, 4), (2, 5), (3, 9)]
    # against the reference (cost 1.5, accuracy 0)
    assert points[0]["hypervolume"] == points[1]["hypervolume"] == pytest.approx((1.5 - 0.5) * 50)
    assert points[2]["hypervolume"] == pytest.approx((1.5 - 0.4) * 60)
    row = se.summarise("grid", points, target=60.0, trials=trials)
    assert (row["trials_to_target"], row["epochs_to_target"], row["stopped"]) == (3, 9, 1)
    assert se.summarise("grid", points, target=1e9, trials=trials)["trials_to_target"] is None


def test_verdicts_compare_each_variant_with_its_own_base():
    rows = {"grid": {"hypervolume": 100.0, "trial_epochs": 64}, "grid+pareto": {"hypervolume": 99.0, "trial_epochs": 40},
            "optuna s0": {"hypervolume": 98.0, "trial_epochs": 32},
            "optuna+pareto s0": {"hypervolume": 98.0, "trial_epochs": 16},
            "optuna4 s0": {"hypervolume": 101.0, "trial_epochs": 32},
            "optuna4+pareto s0": {"hypervolume": 90.9, "trial_epochs": 24}}
    v = se.verdicts(rows, [0])
    assert (v["optuna_hv_ratio"], v["optuna4_hv_ratio"]) == pytest.approx((0.98, 1.01))
    assert (v["grid_pareto_epoch_saving"], v["grid_pareto_hv_loss"]) == pytest.approx((24 / 64, 0.01))
    assert (v["optuna_pareto_epoch_saving"], v["optuna_pareto_hv_loss"]) == pytest.approx((0.5, 0.0))
    assert (v["optuna4_pareto_epoch_saving"], v["optuna4_pareto_hv_loss"]) == pytest.approx((0.25, 0.1))
    text = se.section(machine_info(wait_idle_s=0), "| table |", v, [0], se.Path("runs/x"))
    assert "`scheduler=pareto` on `grid`: 37.5% of trial-epochs saved, 1.0% hypervolume lost" in text
    assert "`optuna4`: final hypervolume / the grid's" in text and "RESULT search_efficiency_optuna4_hv_ratio=1.0100" in text


def test_variants_and_quick_overrides_replace_keys_rather_than_repeat_them():
    plan = se.variants([0, 1])
    assert list(plan) == ["grid", "grid+pareto", "optuna s0", "optuna+pareto s0", "optuna s1", "optuna+pareto s1",
                          "optuna4 s0", "optuna4+pareto s0", "optuna4 s1", "optuna4+pareto s1"]
    assert "search.startup_trials=4" in plan["optuna4 s0"]
    assert "scheduler=pareto" in plan["optuna+pareto s1"] and "search.seed=1" in plan["optuna+pareto s1"]
    merged = se.with_overrides(plan["grid"], ["methods=[union]"])
    assert [o for o in merged if o.startswith("methods=")] == ["methods=[union]"]
