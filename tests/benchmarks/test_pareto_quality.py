"""benchmarks/pareto_quality.py and the random-switch baseline of benchmarks/_training.py: pure logic, one tiny
training."""

import pytest
import torch

from bap import build_model
from bap.config import BudgetConfig, ExperimentConfig, ModelConfig, SharingConfig, TrainConfig
from bap.losses import budget_usage, intersection_union, switch_costs
from benchmarks import pareto_quality as pq
from benchmarks._training import random_budget_masks, train_fixed_switches
from tests.bap.helpers import tiny_domain

DOMAINS = {"a": 3, "b": 4, "c": 5}


def _model():
    return build_model("resnet26", DOMAINS, width=0.25)


@pytest.mark.parametrize("budget", pq.BUDGETS)
@pytest.mark.parametrize("unit", ["params", "switches"])
def test_random_masks_meet_the_budget_in_the_methods_own_measure(budget, unit):
    model = _model()
    costs = switch_costs(model, unit)
    masks = random_budget_masks(model, budget, costs, shared=False, generator=torch.Generator().manual_seed(0))
    for per_conv in masks.values():
        usage = float(budget_usage({n: m.double() for n, m in per_conv.items()}, costs))
        assert budget - 0.08 <= usage <= budget + 1e-9  # close to the budget, never above it


def test_shared_masks_are_one_draw_and_independent_ones_differ():
    model = _model()
    costs = switch_costs(model, "params")
    shared = random_budget_masks(model, 0.5, costs, shared=True, generator=torch.Generator().manual_seed(0))
    independent = random_budget_masks(model, 0.5, costs, shared=False, generator=torch.Generator().manual_seed(0))
    first = shared["a"]
    assert all(torch.equal(first[n], shared[d][n]) for d in DOMAINS for n in first)
    _, union_shared = intersection_union([{n: m.double() for n, m in v.items()} for v in shared.values()], costs)
    _, union_indep = intersection_union([{n: m.double() for n, m in v.items()} for v in independent.values()], costs)
    assert float(union_shared) <= 0.5 + 1e-9 < float(union_indep)


def test_random_masks_refuse_a_budget_below_one_channel_per_conv():
    model = _model()
    with pytest.raises(ValueError, match="one-channel minimum"):
        random_budget_masks(model, 0.001, switch_costs(model, "params"), shared=True,
                            generator=torch.Generator().manual_seed(0))


def _fixed_cfg(sharing="none"):
    return ExperimentConfig(
        model=ModelConfig(backbone="resnet26", width=0.125), budget=BudgetConfig(budget=0.5),
        sharing=SharingConfig(loss=sharing),
        train=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=8, eval_batch_size=32, device="cpu", seed=3),
    )


def test_fixed_switches_stay_as_drawn_while_bn_and_heads_train():
    domains = {"a": tiny_domain("a", 3, seed=1), "b": tiny_domain("b", 4, seed=2)}
    result = train_fixed_switches(_fixed_cfg(), domains, shared=False)
    model = result.model
    expected = random_budget_masks(model, 0.5, switch_costs(model, "params", (16, 16)), shared=False,
                                   generator=torch.Generator().manual_seed(3))
    masks = model.masks()
    assert all(torch.equal(masks[d][n], expected[d][n]) for d in expected for n in expected[d])
    assert result.metrics["budget_met"] == 1.0 and 0 < result.metrics["params_ratio"] < 1.05
    torch.manual_seed(3)  # the seed train_fixed_switches builds its model with: the same initial heads
    initial = build_model("resnet26", {"a": 3, "b": 4}, width=0.125)
    assert not torch.equal(model.fc.heads["a"].weight, initial.fc.heads["a"].weight)


def test_fixed_switches_refuse_a_sharing_loss():
    domains = {"a": tiny_domain("a", 3, seed=1)}
    with pytest.raises(ValueError, match="sharing.loss"):
        train_fixed_switches(_fixed_cfg("jaccard"), domains, shared=True)


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
