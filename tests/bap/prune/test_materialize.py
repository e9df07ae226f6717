"""Physical pruning: the materialized model is smaller and computes exactly what the masked one computes."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bap import build_model, count, list_models, materialize
from bap.layers import SwitchedConv2d
from tests.bap.helpers import random_masks, randomize_bn

SIZE = {"resnet26": 32, "resnet50": 64}


def masked_model(name, densities, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, {f"d{i}": 3 + i for i in range(len(densities))}, width=0.25)
    randomize_bn(model, seed)
    model.set_masks(random_masks(model, densities, seed))
    return model.eval()


def assert_same_logits(model, pruned, domains, size):
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        for d in domains:
            torch.testing.assert_close(pruned(x, d), model(x, d), rtol=1e-4, atol=1e-4, msg=d)


def flop_macs(model, domain, size):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size), domain)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("densities", [(0.3, 0.6, 0.9), (0.1, 0.15, 0.2)])
def test_union_model_matches_masked_model(name, densities):
    model = masked_model(name, densities)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = materialize(model)
    assert_same_logits(model, pruned, model.domains, SIZE[name])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    counts, full = count(pruned, (SIZE[name],) * 2), count(model, (SIZE[name],) * 2)
    assert counts.params == sum(p.numel() for p in pruned.parameters())
    assert counts.params < full.params and counts.conv_params < full.conv_params
    for d in model.domains:
        assert counts.macs[d] == flop_macs(pruned, d, SIZE[name]) < full.macs[d]
    # real removal: no weight is a zeroed full-size tensor, masks only cover kept channels
    for conv in pruned.convs().values():
        assert conv.fixed or not conv.switched
        for d in conv.domains:
            assert getattr(conv, f"mask__{d}").numel() == conv.in_channels


@pytest.mark.parametrize("name", list_models())
def test_single_domain_model_is_smallest_and_exact(name):
    model = masked_model(name, (0.3, 0.8))
    union = count(materialize(model), (SIZE[name],) * 2)
    for d in model.domains:
        single = materialize(model, domain=d)
        assert single.domains == [d]
        assert not single.switched_convs()  # the one domain uses every kept input: nothing left to switch
        assert_same_logits(model, single, [d], SIZE[name])
        assert count(single, (SIZE[name],) * 2).conv_params < union.conv_params
        with pytest.raises(KeyError):
            single(torch.zeros(1, 3, 8, 8), "d1" if d == "d0" else "d0")


def test_all_switches_on_keeps_every_weight():
    model = masked_model("resnet26", (1.0, 1.0))
    pruned = materialize(model)
    assert count(pruned, (32, 32)).conv_params == count(model, (32, 32)).conv_params
    assert all(c.in_index is None for c in pruned.convs().values())
    assert not pruned.switched_convs()  # switches every domain keeps on are dropped
    assert_same_logits(model, pruned, model.domains, 32)


@pytest.mark.parametrize("name", list_models())
def test_conv_off_for_every_domain_reduces_block_to_shortcut_plus_bias(name):
    model = masked_model(name, (0.6, 0.7))
    masks = model.masks()
    dead = ["layer1.0.conv2", "layer2.1.conv1", "layer1.1.conv1"]
    for d in masks:
        for n in dead:
            masks[d][n][:] = False
    model.set_masks(masks)
    pruned = materialize(model)
    assert_same_logits(model, pruned, model.domains, SIZE[name])
    assert pruned.get_submodule("layer1.0.conv2").in_channels == 0
    assert pruned.get_submodule("layer1.0.conv1").out_channels == 0  # its filters fed only the dead conv
    assert pruned.get_submodule("layer1.0.bn1").num_features == 0


def test_single_domain_network_and_masks_differing_inside_the_union():
    model = masked_model("resnet26", (0.5,))
    assert_same_logits(model, materialize(model), model.domains, 32)
    two = masked_model("resnet26", (0.5, 0.5), seed=3)
    pruned = materialize(two)
    conv = pruned.get_submodule("layer2.0.conv2")
    # each domain keeps its own mask over the union, and the two differ
    assert not torch.equal(conv.mask__d0, conv.mask__d1)
    assert bool((conv.mask__d0 | conv.mask__d1).all())


def test_inner_channels_remove_producer_filters_and_bn_channels():
    model = masked_model("resnet50", (0.5, 0.5))
    pruned = materialize(model)
    union = (model.masks()["d0"]["layer1.0.conv2"] | model.masks()["d1"]["layer1.0.conv2"]).sum()
    assert pruned.get_submodule("layer1.0.conv1").out_channels == union
    assert pruned.get_submodule("layer1.0.bn1").bns["d0"].num_features == union
    # residual-stream consumers gather the channels they keep instead
    down = pruned.get_submodule("layer1.0.downsample.0")
    assert isinstance(down, SwitchedConv2d) and down.in_index is not None
