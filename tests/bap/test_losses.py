"""The sharing losses (METHOD 3, 3b property 2): values on hand-made masks, gradients, layer normalisation."""

import pytest
import torch

from bap import build_model
from bap.budget import switch_costs
from bap.config import SHARING_LOSSES
from bap.losses import SHARING_NORMALIZATIONS, CostLayout, cost_layout, flat_sharing_loss, sharing_loss, stack_masks
from tests.bap.helpers import random_masks


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
