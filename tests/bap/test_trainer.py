"""Joint training: budgets are met, the loop resumes exactly, every epoch is reported."""

import dataclasses

import pytest
import torch

from bap import ExperimentConfig, train
from bap.config import BudgetConfig, ModelConfig, SharingConfig, TrainConfig
from bap.engine.hooks import CHECKPOINT_NAME


def config(budget=1.0, sharing="none", epochs=2, **train_kw):
    return ExperimentConfig(
        model=ModelConfig(backbone="resnet26", width=0.125),
        budget=BudgetConfig(budget=budget, dual_lr=0.5),
        sharing=SharingConfig(loss=sharing, weight=train_kw.pop("weight", 1.0)),
        train=TrainConfig(epochs=epochs, steps_per_epoch=train_kw.pop("steps", 3), batch_size=8,
                          eval_batch_size=16, device="cpu", switch_lr=0.01, **train_kw),
    )


def test_resume_is_exact(tmp_path, tiny_domains):
    straight = train(config(epochs=2, sharing="jaccard"), domains=tiny_domains, checkpoint_dir=str(tmp_path / "a"))
    train(config(epochs=1, sharing="jaccard"), domains=tiny_domains, checkpoint_dir=str(tmp_path / "b"))
    resumed = train(config(epochs=2, sharing="jaccard"), domains=tiny_domains, checkpoint_dir=str(tmp_path / "b"),
                    resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.history == resumed.history
    assert straight.metrics == resumed.metrics


def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path, tiny_domains):
    train(config(epochs=1), domains=tiny_domains, checkpoint_dir=str(tmp_path))
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert {"model", "switch_optimizer", "domain_optimizer", "multipliers", "rng_cpu", "epoch", "config"} <= set(state)
    assert state["epoch"] == 1 and state["config"]["budget"]["budget"] == 1.0


def test_every_epoch_reaches_the_callback(tiny_domains):
    seen = []
    result = train(config(epochs=2, sharing="union"), domains=tiny_domains, callback=seen.append)
    assert [m["epoch"] for m in seen] == [1, 2]
    for m in seen:
        for key in ("val/acc/alpha", "val/acc/beta", "val/acc_mean", "budget_usage/alpha", "lambda/beta",
                    "union_fraction", "loss/ce/alpha", "loss/sharing"):
            assert key in m, key
    assert len(result.history) == 2


@pytest.mark.parametrize("budget", [0.5, 0.25])
def test_final_model_meets_its_budget(tiny_domains, budget):
    result = train(config(budget=budget, epochs=1, steps=2), domains=tiny_domains)
    m = result.metrics
    assert m["budget_met"] == 1.0
    assert m["budget_usage/alpha"] <= budget and m["budget_usage/beta"] <= budget
    # two steps cannot reach the budget by dual ascent alone: the projection did the rest and says so
    assert m["projected_off/alpha"] > 0
    assert m["params_ratio"] < 1.0 or m["union_fraction"] > budget


def test_budget_pressure_turns_switches_off(tiny_domains):
    result = train(config(budget=0.3, epochs=3, steps=10), domains=tiny_domains)
    usage = [h["budget_usage/alpha"] for h in result.history]
    assert usage[-1] < usage[0] <= 1.0
    assert result.history[0]["lambda/alpha"] > 0


def test_learning_beats_chance(tiny_domains):
    result = train(config(budget=1.0, epochs=3, steps=10, lr=0.05), domains=tiny_domains)
    assert result.metrics["acc/alpha"] > 100 / 3 + 15


def test_round_robin_and_learnable_weight_run(tiny_domains):
    seen = []
    cfg = config(sharing="jaccard", epochs=1, steps=4, schedule="round_robin", weight="learnable")
    train(cfg, domains=tiny_domains, callback=seen.append)
    assert "sharing_weight" in seen[0] and seen[0]["sharing_weight"] != 1.0


def test_pruned_result_equals_masked_model(tiny_domains):
    result = train(config(budget=0.5, epochs=1), domains=tiny_domains)
    x = torch.randn(4, 3, 16, 16)
    result.model.eval()
    with torch.no_grad():
        for d in tiny_domains:
            torch.testing.assert_close(result.pruned(x, d), result.model(x, d), rtol=1e-4, atol=1e-4)


def test_bad_config_values_name_the_field():
    with pytest.raises(ValueError, match=r"budget.budget=1.5 is outside \(0, 1\]"):
        BudgetConfig(budget=1.5)
    with pytest.raises(ValueError, match="sharing.loss='dice'"):
        SharingConfig(loss="dice")
    with pytest.raises(ValueError, match="sharing.weight='heavy'"):
        SharingConfig(weight="heavy")
    with pytest.raises(ValueError, match="train.device='tpu'"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="train.epochs=0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="model.backbone='vgg'"):
        ModelConfig(backbone="vgg")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_a_gpu_fails_before_any_work():
    cfg = config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cuda"))
    with pytest.raises(ValueError, match="train.device='cuda' but no CUDA device"):
        train(cfg, domains={"never": "built"})
