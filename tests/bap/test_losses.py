"""Budget usage, dual ascent, sharing losses and the hard budget projection against hand-computed values."""

import pytest
import torch

from bap import build_model
from bap.losses import budget_usage, dual_update, project_to_budget, sharing_loss, switch_costs
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


def test_dual_update_grows_while_over_budget_and_never_goes_negative():
    assert dual_update(0.0, 0.8, 0.5, 0.1) == pytest.approx(0.03)
    assert dual_update(0.01, 0.2, 0.5, 0.1) == 0.0


def _masks(values):
    return {"l": torch.tensor(values, dtype=torch.float)}


def test_sharing_losses_on_hand_made_masks():
    costs = {"l": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    a, b = _masks([1, 1, 0, 0]), _masks([1, 0, 1, 0])
    # I = 0.1 (channel 0), U = 0.6 (channels 0-2)
    assert float(sharing_loss("int", [a, b], costs)) == pytest.approx(0.9)
    assert float(sharing_loss("union", [a, b], costs)) == pytest.approx(0.6)
    assert float(sharing_loss("jaccard", [a, b], costs)) == pytest.approx(1 - 0.1 / 0.6)
    assert float(sharing_loss("jaccard", [a, a], costs)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="sharing.loss='none'"):
        sharing_loss("none", [a, b], costs)


def test_jaccard_gradient_pushes_domains_together():
    costs = {"l": torch.full((2,), 0.5)}
    za = torch.tensor([1.0, 1.0], requires_grad=True)  # STE masks: value 1, gradient identity
    zb = torch.tensor([1.0, 0.0], requires_grad=True)
    sharing_loss("jaccard", [{"l": za}, {"l": zb}], costs).backward()
    assert za.grad[1] > 0  # turning off a's unshared channel lowers the loss
    assert zb.grad[1] < 0  # turning on b's missing channel lowers it too


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
        assert float(budget_usage(hard, costs)) <= 0.6
        assert float(budget_usage(hard, costs)) > 0.6 - 0.01  # removes no more than it must
        assert turned_off[domain] > 0
    name = lowest[1]
    conv = model.switched_convs()[name]
    assert not conv.hard_mask("a")[int(conv.latent["a"].argmin())]
    assert project_to_budget(model, 0.6, costs) == {"a": 0, "b": 0}
