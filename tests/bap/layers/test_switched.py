"""SwitchedConv2d: masking, straight-through gradients, fixed masks and gathered inputs."""

import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F

from bap.layers import DomainBatchNorm2d, SwitchedConv2d, binarize, conv_bn, native


def test_binarize_is_hard_forward_and_identity_backward():
    z = torch.tensor([0.0, 0.004, 0.006, 0.02], requires_grad=True)
    m = binarize(z, 5e-3)
    assert m.tolist() == [0.0, 0.0, 1.0, 1.0]
    (m * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert z.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_masked_conv_equals_conv_with_input_channels_removed():
    torch.manual_seed(0)
    conv = SwitchedConv2d(6, 4, 3, padding=1, domains=["a", "b"])
    keep = torch.tensor([True, False, True, True, False, True])
    conv.set_mask("a", keep, init=1e-2)
    x = torch.randn(2, 6, 8, 8)
    expected = F.conv2d(x[:, keep], conv.weight[:, keep], padding=1)
    assert torch.allclose(conv(x, "a"), expected, atol=1e-6)
    assert torch.allclose(conv(x, "b"), F.conv2d(x, conv.weight, padding=1), atol=1e-6)
    assert torch.equal(conv.hard_mask("a"), keep)


def test_switch_gradient_reaches_latent_but_not_weight():
    conv = SwitchedConv2d(4, 3, 3, padding=1, domains=["a"])
    conv(torch.randn(2, 4, 5, 5), "a").square().sum().backward()
    assert conv.latent["a"].grad is not None and conv.latent["a"].grad.abs().sum() > 0
    assert conv.weight.grad is None


def test_set_mask_keeps_latents_already_on_the_right_side():
    conv = SwitchedConv2d(3, 2, 1, domains=["a"])
    with torch.no_grad():
        conv.latent["a"].copy_(torch.tensor([0.5, 0.001, 0.2]))
    conv.set_mask("a", torch.tensor([True, True, False]), init=1e-2)
    assert conv.latent["a"].tolist() == pytest.approx([0.5, 1e-2, 0.0])
    with pytest.raises(ValueError, match="shape"):
        conv.set_mask("a", torch.ones(4, dtype=torch.bool), init=1e-2)


def test_fixed_masks_are_buffers_and_gather_selects_inputs():
    conv = SwitchedConv2d(2, 3, 1, domains=["a"], fixed=True, in_index=torch.tensor([1, 3]))
    assert sum(p.numel() for p in conv.parameters()) == 6
    conv.set_mask("a", torch.tensor([False, True]), init=0.0)
    x = torch.randn(1, 4, 2, 2)
    expected = F.conv2d(x[:, [3]], conv.weight[:, [1]])
    assert torch.allclose(conv(x, "a"), expected, atol=1e-6)


def test_conv_with_no_inputs_outputs_zeros_of_the_right_shape():
    conv = SwitchedConv2d(0, 5, 3, stride=2, padding=1, domains=["a"], fixed=True)
    out = conv(torch.randn(2, 0, 9, 9), "a")
    assert out.shape == (2, 5, 5, 5) and not out.any()


@pytest.fixture(params=["native", "python"])
def switched_op(request):
    """Run a test with the C++ op and with the Python fallback."""
    if request.param == "python":
        with native.python_op():
            yield request.param
        return
    if native.switched_conv_op() is None:
        pytest.skip("the C++ op cannot be built here (no compiler)")
    yield request.param


@pytest.mark.parametrize(
    "stride, kernel, side, layout, dtype",
    [(2, 3, 9, "nchw", torch.float32), (1, 3, 8, "nchw", torch.float32), (2, 1, 8, "nchw", torch.float32),
     (1, 1, 7, "nchw", torch.float32), (1, 3, 6, "channels_last", torch.float32), (2, 3, 7, "nchw", torch.float64),
     (1, 3, 2, "nchw", torch.float32)],  # 2x2: fewer input values than weights per channel, the input is masked
)
def test_fused_switched_conv_matches_autograd_reference(switched_op, stride, kernel, side, layout, dtype):
    torch.manual_seed(0)
    conv = SwitchedConv2d(6, 4, kernel, stride=stride, padding=kernel // 2, domains=["a"])
    with torch.no_grad():
        conv.latent["a"].copy_(torch.tensor([0.01, 0.001, 0.02, 0.0, 0.03, 0.01]))
    conv.weight.data = conv.weight.data.to(dtype)
    x = torch.randn(2, 6, side, side, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    out = conv(x, "a")
    grad = torch.randn_like(out)
    out.backward(grad)
    fused_x, fused_latent = x.grad.clone(), conv.latent["a"].grad.clone()
    x.grad = None
    conv.latent["a"].grad = None
    mask = binarize(conv.latent["a"], 5e-3).to(dtype).view(1, -1, 1, 1)
    reference = F.conv2d(x * mask, conv.weight, None, stride, kernel // 2)
    reference.backward(grad)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(fused_x, x.grad)
    torch.testing.assert_close(fused_latent, conv.latent["a"].grad)
    assert fused_x[:, 1].abs().sum() == 0  # switched-off inputs get no gradient...
    assert fused_latent[1] != 0  # ...but their switches do, so they can turn back on


def test_switch_gradient_without_input_gradient(switched_op):
    torch.manual_seed(0)
    conv = SwitchedConv2d(3, 4, 3, padding=1, domains=["a"])
    x = torch.randn(2, 3, 5, 5)  # an image: nothing upstream needs a gradient
    conv(x, "a").square().sum().backward()
    expected = torch.autograd.grad(F.conv2d(x * binarize(conv.latent["a"], 5e-3).view(1, -1, 1, 1), conv.weight,
                                            padding=1).square().sum(), conv.latent["a"])[0]
    torch.testing.assert_close(conv.latent["a"].grad, expected)


@pytest.fixture
def fresh_native_op():
    native._built_op.cache_clear()
    yield
    native._built_op.cache_clear()


def test_native_op_builds_where_a_compiler_is_present(fresh_native_op):
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler on this machine")
    assert native.switched_conv_op() is not None
    with native.python_op():
        assert native.switched_conv_op() is None
    assert native.switched_conv_op() is not None


def test_native_op_falls_back_with_a_warning_or_when_disabled(fresh_native_op, monkeypatch):
    def no_compiler():
        raise RuntimeError("no c++ found")

    monkeypatch.setattr(native, "build", no_compiler)
    with pytest.warns(RuntimeWarning, match="no c\\+\\+ found.*BAP_NATIVE_OPS=0"):
        assert native.switched_conv_op() is None
    native._built_op.cache_clear()
    monkeypatch.setenv("BAP_NATIVE_OPS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.switched_conv_op() is None
    native._built_op.cache_clear()
    monkeypatch.setenv("BAP_NATIVE_OPS", "false")
    with pytest.raises(ValueError, match="BAP_NATIVE_OPS='false': set it to 0"):
        native.switched_conv_op()
    monkeypatch.setenv("BAP_NATIVE_OPS", "0")
    native._built_op.cache_clear()
    conv = SwitchedConv2d(3, 2, 1, domains=["a"])  # training still works, through the Python op
    conv(torch.randn(1, 3, 2, 2, requires_grad=True), "a").sum().backward()
    assert conv.latent["a"].grad is not None


def _domain_bn(channels, domain):
    bn = DomainBatchNorm2d(channels, [domain])
    with torch.no_grad():
        inner = bn.bns[domain]
        inner.running_mean.normal_()
        inner.running_var.uniform_(0.5, 2.0)
        inner.weight.normal_()
        inner.bias.normal_()
    return bn


@pytest.mark.parametrize("mode", ["unswitched", "fixed", "trainable"])
@pytest.mark.parametrize("batch", [1, 16])  # unswitched: batch 1 keeps BN apart (cheaper), batch 16 folds it
@pytest.mark.parametrize("grad", [False, True])
def test_conv_bn_in_eval_equals_bn_after_conv(mode, batch, grad):
    torch.manual_seed(0)
    conv = SwitchedConv2d(8, 6, 3, padding=1, domains=["a"], switched=mode != "unswitched", fixed=mode == "fixed")
    if mode != "unswitched":
        conv.set_mask("a", torch.tensor([True, False, True, True, False, True, True, False]), init=1e-2)
    bn = _domain_bn(6, "a").eval()
    x = torch.randn(batch, 8, 5, 5)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(conv_bn(conv, bn, x, "a"), bn(conv(x, "a"), "a"), rtol=1e-5, atol=1e-5)
    assert conv.folds_cheaply(x) == (mode != "unswitched" or batch == 16)


def test_conv_bn_gradients_reach_bn_and_switches_when_folded():
    torch.manual_seed(0)
    conv = SwitchedConv2d(4, 3, 3, padding=1, domains=["a"])
    bn = _domain_bn(3, "a").eval()
    x = torch.randn(2, 4, 5, 5)
    conv_bn(conv, bn, x, "a").square().sum().backward()
    folded = [p.grad.clone() for p in (bn.bns["a"].weight, bn.bns["a"].bias, conv.latent["a"])]
    for p in (bn.bns["a"].weight, bn.bns["a"].bias, conv.latent["a"]):
        p.grad = None
    bn(conv(x, "a"), "a").square().sum().backward()
    for got, p in zip(folded, (bn.bns["a"].weight, bn.bns["a"].bias, conv.latent["a"])):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-5)


def test_conv_bn_in_training_uses_batch_statistics():
    torch.manual_seed(0)
    conv = SwitchedConv2d(4, 3, 3, padding=1, domains=["a"], switched=False)
    bn = _domain_bn(3, "a").train()
    out = conv_bn(conv, bn, torch.randn(8, 4, 5, 5) * 3 + 2, "a")
    # batch statistics normalise each channel to the BN's bias on average
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), bn.bns["a"].bias.detach(), rtol=0, atol=1e-5)


def test_conv_bn_with_no_inputs_gives_the_bn_shift():
    conv = SwitchedConv2d(0, 3, 3, padding=1, domains=["a"], fixed=True)
    bn = _domain_bn(3, "a").eval()
    x = torch.randn(2, 0, 4, 4)
    torch.testing.assert_close(conv_bn(conv, bn, x, "a"), bn(conv(x, "a"), "a"))
