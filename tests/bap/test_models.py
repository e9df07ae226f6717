"""Backbones: structure, exact counts (METHOD 5) and pretrained weights from local files."""

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from bap import build_model, count, list_models
from bap.models import single_domain_state_dict
from bap.models.weights import convert_rebuffi_state_dict
from tests.bap.helpers import randomize_bn

INPUT = {"resnet26": (64, 64), "resnet50": (224, 224)}


def flop_counter_macs(model, domain, size):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, *size), domain)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", list_models())
def test_forward_every_domain_and_frozen_convs(name):
    model = build_model(name, {"a": 7, "b": 3}, width=0.25)
    x = torch.randn(2, 3, 64, 64)
    assert model(x, "a").shape == (2, 7) and model(x, "b").shape == (2, 3)
    assert all(not c.weight.requires_grad for c in model.convs().values())
    # every conv but the stem is switched, with one switch per input channel and domain
    assert set(model.convs()) - set(model.switched_convs()) == {"conv1"}
    masks = model.masks()
    assert set(masks) == {"a", "b"} and all(m.all() for m in masks["a"].values())
    with pytest.raises(KeyError, match="not served"):
        model(x, "c")


@pytest.mark.parametrize("name", list_models())
def test_count_matches_flop_counter(name):
    model = build_model(name, {"a": 7, "b": 300}, width=0.25)
    counts = count(model, INPUT[name])
    for domain in ("a", "b"):
        assert counts.macs[domain] == flop_counter_macs(model, domain, INPUT[name])
    assert counts.macs_mean == (counts.macs["a"] + counts.macs["b"]) / 2


def test_resnet26_counts_match_method():
    model = build_model("resnet26", {"a": 10})
    counts = count(model, (64, 64))
    assert counts.conv_params == 5_806_944
    conv_macs = counts.macs["a"] - 256 * 10
    assert conv_macs == 852_885_504  # 0.853 G (METHOD 5)
    switched_inputs = sum(c.in_channels for c in model.switched_convs().values())
    assert counts.switches == switched_inputs
    bn = 2 * (32 + 4 * 2 * 64 + 4 * 2 * 128 + 4 * 2 * 256 + 256)
    assert counts.params == 5_806_944 + bn + 256 * 10 + 10


def test_resnet50_counts_match_torchvision():
    model = build_model("resnet50", {"imagenet": 1000})
    counts = count(model, (224, 224))
    assert counts.params == 25_557_032
    assert counts.params == sum(p.numel() for p in torchvision.models.resnet50().parameters())
    assert counts.macs["imagenet"] == flop_counter_macs(model, "imagenet", (224, 224))


def test_params_count_every_domain_once_per_domain_part():
    one = count(build_model("resnet26", {"a": 10}, width=0.25), (32, 32))
    two = count(build_model("resnet26", {"a": 10, "b": 10}, width=0.25), (32, 32))
    assert two.conv_params == one.conv_params
    assert two.params - one.params == one.params - one.conv_params  # one more BN set and head
    assert two.switches == 2 * one.switches


def test_resnet50_loads_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    randomize_bn(reference)
    path = tmp_path / "tv.pt"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet50", {"imagenet": 1000, "other": 5}, weights=str(path)).eval()
    model.fc.heads["imagenet"].load_state_dict(reference.fc.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        # eval folds BN into the convs: the same maths rounded in another order, so the tolerance scales with
        # the logits (~100 here, after 50 layers of randomized BN)
        torch.testing.assert_close(model(x, "imagenet"), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    # both domains start from the pretrained BN
    assert torch.equal(model.layer1[0].bn1.bns["other"].running_var, reference.layer1[0].bn1.running_var)


def test_resnet26_round_trips_its_own_single_domain_weights(tmp_path):
    source = build_model("resnet26", {"src": 5}, width=0.25, unswitched=["*"])
    randomize_bn(source)
    path = tmp_path / "r26.pt"
    torch.save(single_domain_state_dict(source, "src"), path)
    model = build_model("resnet26", {"a": 3}, width=0.25, weights=str(path))
    for name, conv in model.convs().items():
        assert torch.equal(conv.weight, source.convs()[name].weight)


def test_mismatched_weights_name_the_keys(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(single_domain_state_dict(build_model("resnet26", {"a": 3}, width=0.25), "a"), path)
    with pytest.raises(ValueError, match=r"conv1\.weight: file \(8, 3, 3, 3\) vs model \(16, 3, 3, 3\)"):
        build_model("resnet26", {"a": 3}, width=0.5, weights=str(path))
    with pytest.raises(ValueError, match=r"missing keys .*layer1\.0\.conv3\.weight.*unexpected keys .*head_bn"):
        build_model("resnet50", {"a": 3}, width=0.25, weights=str(path))
    with pytest.raises(FileNotFoundError, match="no downloads"):
        build_model("resnet26", {"a": 3}, weights=str(tmp_path / "absent.pt"))


def test_bad_arguments_are_named():
    with pytest.raises(KeyError, match="known: resnet26, resnet50"):
        build_model("resnet18", {"a": 3})
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet26", {})
    with pytest.raises(ValueError, match="unswitched"):
        build_model("resnet26", {"a": 3}, unswitched=["stem"])


def _rebuffi_layout(state, tasks=2):
    """Our single-domain state dict written in residual_adapters' key layout, task 0 holding it, plus the
    extras their parallel-adapter checkpoints carry (other tasks' BNs and heads, 1x1 adapters)."""
    out = {}
    for key, value in state.items():
        for t in range(tasks):
            v = value if t == 0 else torch.randn_like(value.float()).to(value.dtype)
            if key == "conv1.weight":
                out["pre_layers_conv.conv.weight"] = value
            elif key.startswith("bn1."):
                out[f"pre_layers_conv.bns.{t}.{key[4:]}"] = v
            elif key.startswith("head_bn."):
                out[f"end_bns.{t}.0.{key[8:]}"] = v
            elif key.startswith("fc."):
                out[f"linears.{t}.{key[3:]}"] = v
            else:
                block, name, leaf = key.rsplit(".", 2)
                conv = "conv1" if name in ("conv1", "bn1") else "conv2.1"
                if name.startswith("conv"):
                    out[f"{block}.{conv}.conv.weight"] = value
                    out[f"{block}.{conv}.parallel_conv.{t}.conv.weight"] = torch.zeros(1)
                else:
                    out[f"{block}.{conv}.bns.{t}.{leaf}"] = v
    return out


def test_rebuffi_checkpoint_converts_into_our_layout_with_its_source_head(tmp_path):
    source = build_model("resnet26", {"imagenet12": 7}, width=0.25)
    randomize_bn(source)
    ours = single_domain_state_dict(source, "imagenet12")
    converted = convert_rebuffi_state_dict(_rebuffi_layout(ours))
    assert converted.keys() == ours.keys() and all(torch.equal(converted[k], ours[k]) for k in ours)
    path = tmp_path / "rebuffi.pt"
    torch.save(converted, path)
    model = build_model("resnet26", {"imagenet12": 7, "dtd": 3}, width=0.25, weights=str(path),
                        source_domain="imagenet12")
    x = torch.randn(2, 3, 32, 32)
    source.eval(), model.eval()
    torch.testing.assert_close(model(x, "imagenet12"), source(x, "imagenet12"))  # the pretrained classifier kept
    with pytest.raises(ValueError, match="unknown keys"):
        convert_rebuffi_state_dict({**_rebuffi_layout(ours), "layer1.0.conv1.bns.0.0.conv.0.weight": torch.zeros(1)})


def test_source_head_must_match_the_file(tmp_path):
    source = build_model("resnet26", {"src": 7}, width=0.25)
    path = tmp_path / "w.pt"
    torch.save(single_domain_state_dict(source, "src"), path)
    with pytest.raises(ValueError, match="source domain 'src' needs"):
        build_model("resnet26", {"src": 5}, width=0.25, weights=str(path), source_domain="src")
    other = build_model("resnet26", {"dtd": 7}, width=0.25, weights=str(path), source_domain="src")  # not trained
    assert not torch.equal(other.fc.heads["dtd"].weight, source.fc.heads["src"].weight)
    with pytest.raises(ValueError, match="needs model.weights"):
        build_model("resnet26", {"src": 7}, width=0.25, source_domain="src")
