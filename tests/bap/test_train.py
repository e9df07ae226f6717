"""bap.train: one run from a config (the model built for its domains, the trainer, the final projection and
pruned model, ``finalize``)."""

import dataclasses

import pytest
import torch

from bap import metrics as M
from bap import train
from bap.engine.trainer import Trainer
from bap.train import build_for, finalize
from tests.bap.engine.test_trainer import config


def test_pruned_result_equals_masked_model(tiny_domains):
    result = train(config(budget=0.5, epochs=1), domains=tiny_domains)
    x = torch.randn(4, 3, 16, 16)
    result.model.eval()
    with torch.no_grad():
        for d in tiny_domains:
            torch.testing.assert_close(result.pruned(x, d), result.model(x, d), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_a_gpu_fails_before_any_work():
    cfg = config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cuda"))
    with pytest.raises(ValueError, match="train.device='cuda' but no CUDA device"):
        train(cfg, domains={"never": "built"})


def test_heavy_projection_is_reported_and_bn_statistics_are_reestimated(tiny_domains):
    cfg = config(budget=0.5, epochs=1)
    trainer = Trainer(build_for(cfg, tiny_domains), tiny_domains, cfg)  # never trained: every switch still on
    bn = trainer.model.layer1[0].bn1.bns["alpha"]
    before = bn.running_mean.clone()
    m = finalize(trainer).metrics
    for domain in tiny_domains:
        assert m[M.projected_off_key(domain)] > 0
        # all on before (usage 1.0): the share of the 0.5 budget that the projection removed
        assert m[M.projected_share_key(domain)] == pytest.approx((1.0 - m[M.budget_usage_key(domain)]) / 0.5)
    assert m[M.PROJECTION_HEAVY] == 1.0 and m[M.BUDGET_MET] == 1.0
    assert M.ACC_MEAN_BEFORE_PROJECTION in m
    assert not torch.equal(bn.running_mean, before)  # re-estimated under the projected masks
