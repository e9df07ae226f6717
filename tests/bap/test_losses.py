"""Budget usage, the budget schedule and selection, the sharing losses and the hard projection (METHOD 2-3, 3b)."""

import math

import pytest
import torch

from bap import build_model
from bap.config import SHARING_LOSSES
from bap.losses import (
    SHARING_NORMALIZATIONS, CostLayout, budget_target, budget_usage, cost_layout, flat_sharing_loss,
    project_to_budget, select_to_budget, sharing_loss, stack_masks, switch_costs, top_by_cost, usage_summary,
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


def _masks(values):
    return {"l": torch.tensor(values, dtype=torch.float)}


def test_d_way_losses_on_hand_made_masks():
    costs = {"l": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    a, b = _masks([1, 1, 0, 0]), _masks([1, 0, 1, 0])
    # I = 0.1 (channel 0), U = 0.6 (channels 0-2)
    assert float(sharing_loss("int_dway", [a, b], costs, normalize="cost")) == pytest.approx(0.9)
    assert float(sharing_loss("union_dway", [a, b], costs, normalize="cost")) == pytest.approx(0.6)
    assert float(sharing_loss("jaccard_dway", [a, b], costs, normalize="cost")) == pytest.approx(1 - 0.1 / 0.6)
    with pytest.raises(ValueError, match="sharing.loss='none'"):
        sharing_loss("none", [a, b], costs)
    with pytest.raises(ValueError, match="two domains"):
        sharing_loss("int", [a], costs)


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


def _ste(values):
    latent = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    return latent, latent - latent.detach() + torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["int", "union", "jaccard"])
def test_the_papers_losses_have_a_gradient_at_the_all_on_start_for_ten_domains(kind):
    costs = {"l": torch.full((6,), 1 / 6, dtype=torch.float64)}
    latents, masks = zip(*(_ste([1.0] * 6) for _ in range(10)))
    sharing_loss(kind, [{"l": m} for m in masks], costs).backward()
    assert all(bool((z.grad != 0).all()) for z in latents)


@pytest.mark.parametrize("kind", [k for k in SHARING_LOSSES if not k.endswith("_dway")])
def test_every_loss_reaches_every_latent_of_ten_half_pruned_domains(kind):
    # With D = 10 domains keeping half their channels, the D-way union reaches only (1/2)^9 of the latents.
    g = torch.Generator().manual_seed(0)
    costs = {"l": torch.full((400,), 1 / 400, dtype=torch.float64)}
    pairs = [_ste((torch.rand(400, generator=g) < 0.5).double().tolist()) for _ in range(10)]
    sharing_loss(kind, [{"l": m} for _, m in pairs], costs).backward()
    reached = sum(int((z.grad != 0).sum()) for z, _ in pairs) / (10 * 400)
    assert reached > 0.99
    pairs = [_ste((torch.rand(400, generator=g) < 0.5).double().tolist()) for _ in range(10)]
    sharing_loss("union_dway", [{"l": m} for _, m in pairs], costs).backward()
    assert sum(int((z.grad != 0).sum()) for z, _ in pairs) / (10 * 400) < 0.05


@pytest.mark.parametrize("kind", [k for k in SHARING_LOSSES if not k.endswith("_dway")])
def test_each_loss_pulls_a_dropped_channel_towards_the_majority(kind):
    # Three domains use channel 0; one drops it. Lowering the loss means: the dropper takes it back (negative
    # gradient) rather than the others following it off, or the others follow (positive) - never neither.
    costs = {"l": torch.full((2,), 0.5, dtype=torch.float64)}
    pairs = [_ste([1.0, 1.0]) for _ in range(3)] + [_ste([0.0, 1.0])]
    sharing_loss(kind, [{"l": m} for _, m in pairs], costs).backward()
    dropper, others = pairs[3][0].grad[0], [z.grad[0] for z, _ in pairs[:3]]
    assert dropper < 0 or all(g > 0 for g in others)
    if kind in ("int", "jaccard", "consensus"):
        assert dropper < 0  # co-use rewards: the lone dropper is pulled back to the others


def test_union_charges_private_channels_more_than_shared_ones():
    costs = {"l": torch.full((2,), 0.5, dtype=torch.float64)}
    pairs = [_ste([1.0, 1.0]), _ste([0.0, 1.0]), _ste([0.0, 1.0])]  # channel 0 private to domain 0
    sharing_loss("union", [{"l": m} for _, m in pairs], costs).backward()
    private, shared = pairs[0][0].grad
    assert private > shared > 0


def test_pairwise_losses_on_hand_made_masks():
    costs = {"l": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)}
    a, b = _masks([1, 1, 0, 0]), _masks([1, 0, 1, 0])
    a, b = ({"l": m["l"].double()} for m in (a, b))
    # co-use 0.1; Tanimoto 0.1 / 0.6; users per channel (2, 1, 1, 0)
    assert float(sharing_loss("int", [a, b], costs, normalize="cost")) == pytest.approx(0.9)
    assert float(sharing_loss("jaccard", [a, b], costs, normalize="cost")) == pytest.approx(1 - 0.1 / 0.6)
    f = lambda k: (1 - 0.5**k) / (1 - 0.5**2)  # noqa: E731
    assert float(sharing_loss("union", [a, b], costs, normalize="cost")) == pytest.approx(0.1 + 0.5 * f(1))
    assert float(sharing_loss("consensus", [a, b], costs, normalize="cost")) == pytest.approx(0.5 * 0.5 / 0.5)
    assert float(sharing_loss("jaccard", [a, a], costs)) == pytest.approx(0.0, abs=1e-6)


def test_layer_normalisation_weighs_every_layer_alike():
    # layer "small" is 1% of the cost; unshared there, shared in "big"
    costs = {"small": torch.full((2,), 0.005, dtype=torch.float64), "big": torch.full((2,), 0.495, dtype=torch.float64)}
    a = {"small": torch.tensor([1.0, 0.0], dtype=torch.float64), "big": torch.ones(2, dtype=torch.float64)}
    b = {"small": torch.tensor([0.0, 1.0], dtype=torch.float64), "big": torch.ones(2, dtype=torch.float64)}
    assert float(sharing_loss("jaccard", [a, b], costs, normalize="cost")) < 0.02
    assert float(sharing_loss("jaccard", [a, b], costs, normalize="layer")) == pytest.approx(0.5)


def test_usage_summary_counts_overlap_as_domains_per_used_cost():
    costs = {"l": torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)}
    masks = {"a": {"l": torch.tensor([1, 1, 0, 0]).bool()}, "b": {"l": torch.tensor([1, 0, 1, 0]).bool()}}
    summary = usage_summary(masks, costs)
    assert float(summary["union"]) == pytest.approx(0.75)
    assert float(summary["overlap"]) == pytest.approx(1.0 / 0.75)
    assert math.isclose(float(summary["usage"]["a"]), 0.5)


def _per_layer_reference(kind, domain_masks, costs, normalize, q=0.5, eps=1e-8):
    """The loss layer by layer, each with its own few-channel tensors: what flat_sharing_loss must equal."""
    groups = [list(costs)] if normalize == "cost" else [[n] for n in costs]
    losses = []
    for names in groups:
        m = torch.stack([torch.cat([masks[n] for n in names]) for masks in domain_masks])
        w = torch.cat([costs[n] for n in names])
        losses.append(flat_sharing_loss(kind, m, CostLayout(w / w.sum(), torch.zeros(len(w), dtype=torch.long), 1),
                                        q=q, eps=eps))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("normalize", SHARING_NORMALIZATIONS)
@pytest.mark.parametrize("kind", SHARING_LOSSES)
def test_the_whole_network_loss_equals_the_layer_by_layer_one_with_its_gradients(kind, normalize):
    g = torch.Generator().manual_seed(1)
    sizes = {"conv_a": 3, "conv_b": 8, "conv_c": 5}
    costs = {n: torch.rand(k, generator=g, dtype=torch.float64) for n, k in sizes.items()}
    values = [{n: (torch.rand(k, generator=g) < 0.6).double() for n, k in sizes.items()} for _ in range(4)]

    def loss_and_grads(fn):
        latents = [{n: v.clone().requires_grad_() for n, v in masks.items()} for masks in values]
        loss = fn([{n: z - z.detach() + z.detach() for n, z in masks.items()} for masks in latents])
        loss.backward()
        return loss.detach(), torch.cat([z.grad for masks in latents for z in masks.values()])

    flat = loss_and_grads(lambda masks: sharing_loss(kind, masks, costs, normalize=normalize))
    reference = loss_and_grads(lambda masks: _per_layer_reference(kind, masks, costs, normalize))
    torch.testing.assert_close(flat, reference)


def test_the_trainers_flat_masks_are_the_convs_masks_and_pass_gradients_to_every_latent():
    model = build_model("resnet26", {"a": 3, "b": 4}, width=0.25)
    model.set_masks(random_masks(model, [0.5, 0.7]))
    costs = switch_costs(model, "params")
    flat = model.flat_soft_masks(["a", "b"])
    hard = model.masks()
    torch.testing.assert_close(flat.detach(), stack_masks([hard["a"], hard["b"]], costs).float())
    flat_sharing_loss("union", flat, cost_layout(costs)).backward()
    assert all(p.grad is not None for p in model.switch_parameters())
