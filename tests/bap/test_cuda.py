"""The same code on a CUDA device: joint training with mixed precision, the fused switch op, pruning."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bap import build_model, materialize, train
from bap.layers import SwitchedConv2d, binarize
from tests.bap.helpers import random_masks, randomize_bn
from tests.bap.engine.test_trainer import config

pytestmark = pytest.mark.gpu


def test_training_on_cuda_with_mixed_precision_meets_the_budget(tiny_domains):
    cfg = config(budget=0.5, sharing="jaccard", epochs=2, steps=4)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cuda", amp=True))
    result = train(cfg, domains=tiny_domains)
    assert next(result.model.parameters()).device.type == "cuda"
    assert result.metrics["budget_met"] == 1.0
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    for switches in result.model.switch_parameters():  # the switches moved: gradients flowed under autocast
        assert switches.device.type == "cuda"
    assert any((p != cfg.budget.init).any() for p in result.model.switch_parameters())


def test_fused_switched_conv_under_autocast_matches_float32_reference():
    torch.manual_seed(0)
    conv = SwitchedConv2d(16, 8, 3, padding=1, domains=["a"]).cuda()
    with torch.no_grad():
        conv.latent["a"].copy_(torch.rand(16, device="cuda") * 0.02)
    x = torch.randn(4, 16, 12, 12, device="cuda", requires_grad=True)
    with torch.autocast("cuda"):
        out = conv(x, "a")
    assert out.dtype == torch.float16
    out.float().square().sum().backward()
    fused_x, fused_latent = x.grad.clone(), conv.latent["a"].grad.clone()
    x.grad, conv.latent["a"].grad = None, None
    mask = binarize(conv.latent["a"], conv.threshold).view(1, -1, 1, 1)
    F.conv2d(x * mask, conv.weight, None, 1, 1).square().sum().backward()
    # half precision: compare at the gradients' own scale
    for fused, reference in ((fused_x, x.grad), (fused_latent, conv.latent["a"].grad)):
        torch.testing.assert_close(fused, reference, rtol=0, atol=1e-2 * reference.abs().max().item())


@pytest.mark.parametrize("name", ["resnet26", "resnet50"])
def test_materialized_model_on_cuda_matches_masked_model(name):
    torch.manual_seed(0)
    model = build_model(name, {"d0": 3, "d1": 5}, width=0.25)
    randomize_bn(model)
    model.set_masks(random_masks(model, (0.3, 0.7)))
    model = model.cuda().eval()
    pruned = materialize(model)
    assert next(pruned.parameters()).device.type == "cuda"
    x = torch.randn(3, 3, 64, 64, device="cuda")
    # TF32 convolutions would round the two differently shaped models apart
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for domain in model.domains:
            torch.testing.assert_close(pruned(x, domain), model(x, domain), rtol=1e-3, atol=1e-3)
