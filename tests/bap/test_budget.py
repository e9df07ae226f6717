"""Budget accounting: switch costs, usage, the annealed target, selection and the hard projection (METHOD 2, 3b)."""

import math

import pytest
import torch

from bap import build_model
from bap.budget import (
    budget_target, budget_usage, project_to_budget, select_to_budget, switch_costs, top_by_cost, usage_summary,
)
from tests.bap.helpers import random_masks


def test_params_costs_follow_the_method_formula():
    model = build_model("resnet26", {"a": 3}, width=0.25)
    costs = switch_costs(model, "params")
    convs = model.switched_convs()
    total = sum(c.out_channels * c.kernel_size**2 * c.in_channels for c in convs.values())
    for name, conv in convs.items():
        assert torch.allclose(costs[name], torch.full((conv.in_channels,), conv.out_channels * 9 / total, dtype=torch.float64))
    masks = random_masks(model, [0.5])["a"]
    expected = sum(c.out_channels * 9 * int(masks[n].sum()) for n, c in convs.items()) / total
    assert float(budget_usage({n: m.float() for n, m in masks.items()}, costs)) == pytest.approx(expected)


def test_switch_and_macs_units():
    model = build_model("resnet26", {"a": 3}, width=0.25)
    n_switches = sum(c.in_channels for c in model.switched_convs().values())
    switches = switch_costs(model, "switches")
    assert all(torch.allclose(c, torch.full_like(c, 1 / n_switches)) for c in switches.values())
    macs = switch_costs(model, "macs", (32, 32))
    # stage 3 convs run at a quarter of stage 2's resolution: per-channel MAC cost is lower than its param cost
    params = switch_costs(model, "params")
    assert macs["layer3.1.conv1"][0] / macs["layer2.1.conv1"][0] < params["layer3.1.conv1"][0] / params["layer2.1.conv1"][0]
    with pytest.raises(ValueError, match="input size"):
        switch_costs(model, "macs")


def test_projection_meets_the_budget_and_removes_the_lowest_latents():
    torch.manual_seed(0)
    model = build_model("resnet26", {"a": 3, "b": 3}, width=0.25)
    for conv in model.switched_convs().values():
        for latent in conv.latent.values():
            latent.data = torch.rand_like(latent) * 0.1 + 0.006  # all on, distinct latents
    costs = switch_costs(model, "params")
    lowest = min((float(c.latent["a"].detach().min()), n) for n, c in model.switched_convs().items())
    turned_off = project_to_budget(model, 0.6, costs)
    for domain in ("a", "b"):
        hard = {n: m.float() for n, m in model.masks()[domain].items()}
        assert float(budget_usage(hard, costs)) <= 0.6 + 1e-12  # float64 sums in another order
        assert float(budget_usage(hard, costs)) > 0.6 - 0.01  # removes no more than it must
        assert turned_off[domain] > 0
    name = lowest[1]
    conv = model.switched_convs()[name]
    assert not conv.hard_mask("a")[int(conv.latent["a"].argmin())]
    assert project_to_budget(model, 0.6, costs) == {"a": 0, "b": 0}


def test_budget_target_holds_then_anneals_cubically_to_beta():
    assert budget_target(0, 100, 0.5, 0.1, 0.6) == 1.0
    assert budget_target(10, 100, 0.5, 0.1, 0.6) == 1.0
    assert budget_target(35, 100, 0.5, 0.1, 0.6) == pytest.approx(0.5 + 0.5 * 0.5**3)
    assert budget_target(60, 100, 0.5, 0.1, 0.6) == 0.5
    assert budget_target(100, 100, 0.5, 0.1, 0.6) == 0.5
    values = [budget_target(s, 100, 0.25, 0.0, 1.0) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_top_by_cost_fills_the_budget_in_score_order():
    scores = torch.tensor([0.3, 0.9, 0.1, 0.5])
    cost = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    assert top_by_cost(scores, cost, 0.5).tolist() == [False, True, False, True]
    assert top_by_cost(scores, cost, 0.49).tolist() == [False, True, False, False]
    assert top_by_cost(scores, cost, 1.0).all()
    # ties: the lower index first, so a selection never depends on anything but the scores
    assert top_by_cost(torch.zeros(4), cost, 0.5).tolist() == [True, True, False, False]


def _spread_latents(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for conv in model.switched_convs().values():
        for latent in conv.latent.values():
            latent.data = torch.randn(latent.shape, generator=g) * 0.05


@pytest.mark.parametrize("target", [1.0, 0.75, 0.5, 0.25, 0.0])
def test_selection_keeps_exactly_the_top_latents_and_their_order(target):
    model = build_model("resnet26", {"a": 3, "b": 4}, width=0.25)
    costs = switch_costs(model, "params")
    _spread_latents(model)
    flat = {d: torch.cat([c.latent[d].detach().clone() for c in model.switched_convs().values()]) for d in "ab"}
    cost = torch.cat(list(costs.values()))
    select_to_budget(model, {"a": target, "b": target}, costs)
    for d in "ab":
        hard = torch.cat([m for m in model.masks()[d].values()])
        assert torch.equal(hard, top_by_cost(flat[d], cost, target))
        usage = float(budget_usage({n: m.double() for n, m in model.masks()[d].items()}, costs))
        assert target - 0.01 <= usage <= target + 1e-12
        after = torch.cat([c.latent[d].detach() for c in model.switched_convs().values()])
        # one shift per domain: differences between latents (what Adam has learned) are kept
        torch.testing.assert_close(after - after[0], flat[d] - flat[d][0], atol=1e-6, rtol=0)


def test_selection_separates_tied_latents_at_the_cut():
    model = build_model("resnet26", {"a": 3}, width=0.25)  # every latent equal: one big tie
    costs = switch_costs(model, "switches")
    select_to_budget(model, {"a": 0.5}, costs)
    usage = float(budget_usage({n: m.double() for n, m in model.masks()["a"].items()}, costs))
    assert 0.5 - 0.01 <= usage <= 0.5


def test_usage_summary_counts_overlap_as_domains_per_used_cost():
    costs = {"l": torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)}
    masks = {"a": {"l": torch.tensor([1, 1, 0, 0]).bool()}, "b": {"l": torch.tensor([1, 0, 1, 0]).bool()}}
    summary = usage_summary(masks, costs)
    assert float(summary["union"]) == pytest.approx(0.75)
    assert float(summary["overlap"]) == pytest.approx(1.0 / 0.75)
    assert math.isclose(float(summary["usage"]["a"]), 0.5)
