"""Joint training: budgets bind, sharing shares, switches are stable, the loop resumes exactly, every epoch is
reported (METHOD 3b's properties)."""

import copy
import dataclasses
import math

import pytest
import torch

from bap import ExperimentConfig, train
from bap import metrics as M
from bap.config import BASELINES, ONE_SHOT_BASELINES, SHARING_OPTIONS, BudgetConfig, ModelConfig, SharingConfig, TrainConfig
from bap.counting import count, reference_counts
from bap.engine.hooks import CHECKPOINT_NAME, Hook
from bap.engine.trainer import Trainer
from bap.budget import project_to_budget, usage_summary
from bap.prune import materialize
from bap.train import build_for, finalize
from tests.bap.helpers import tiny_domain


def config(budget=1.0, sharing="none", epochs=2, **train_kw):
    sharing_kw = {k: train_kw.pop(k) for k in ("target", "max_weight", "dual_lr") if k in train_kw}
    budget_kw = {k: train_kw.pop(k) for k in ("anneal_start", "anneal_end") if k in train_kw}
    return ExperimentConfig(
        model=ModelConfig(backbone="resnet26", width=0.125),
        budget=BudgetConfig(beta=budget, **budget_kw),
        sharing=SharingConfig(loss=sharing, weight=train_kw.pop("weight", 1.0), **sharing_kw),
        train=TrainConfig(epochs=epochs, steps_per_epoch=train_kw.pop("steps", 3), batch_size=8,
                          eval_batch_size=16, device="cpu", switch_lr=train_kw.pop("switch_lr", 0.01), **train_kw),
    )


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(Hook):
    """Kills the run right after epoch 1 is checkpointed: what a preempted trial looks like."""

    def after_epoch(self, trainer):
        raise _Interrupt


def test_resume_is_exact(tmp_path, tiny_domains):
    cfg = config(epochs=2, sharing="jaccard")
    straight = train(cfg, domains=tiny_domains, checkpoint_dir=str(tmp_path / "a"))
    with pytest.raises(_Interrupt):
        train(cfg, domains=tiny_domains, checkpoint_dir=str(tmp_path / "b"), hooks=[_StopAfterFirstEpoch()])
    resumed = train(cfg, domains=tiny_domains, checkpoint_dir=str(tmp_path / "b"), resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.history == resumed.history
    assert straight.metrics == resumed.metrics


def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path, tiny_domains):
    train(config(epochs=1), domains=tiny_domains, checkpoint_dir=str(tmp_path))
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert {"model", "switch_optimizer", "domain_optimizer", "sharing_rho", "rng_cpu", "epoch", "config"} <= set(state)
    assert state["epoch"] == 1 and state["config"]["budget"]["beta"] == 1.0


def test_every_epoch_reaches_the_callback(tiny_domains):
    seen = []
    result = train(config(epochs=2, sharing="union"), domains=tiny_domains, callback=seen.append)
    assert [m["epoch"] for m in seen] == [1, 2]
    for m in seen:
        for key in ("val/acc/alpha", "val/acc/beta", "val/acc_mean", "budget_usage/alpha", "budget_target",
                    "union_fraction", "overlap", "loss/ce/alpha", "loss/sharing"):
            assert key in m, key
    assert len(result.history) == 2


@pytest.mark.parametrize("budget", [0.75, 0.5, 0.25])
@pytest.mark.parametrize("sharing", [o for o in SHARING_OPTIONS if o not in BASELINES])
def test_budgets_bind_at_beta_not_below_before_any_projection(tiny_domains, budget, sharing):
    if sharing not in ("none", "jaccard") and budget != 0.5:
        pytest.skip("every option at 0.5; none and the default loss at every budget")
    result = train(config(budget=budget, sharing=sharing, epochs=2, steps=5, switch_lr=0.01), domains=tiny_domains)
    m = result.metrics
    for domain in tiny_domains:
        assert m[M.projected_off_key(domain)] == 0  # training itself met the budget
        assert budget - 0.03 <= m[M.budget_usage_key(domain)] <= budget + 1e-12
    assert m[M.BUDGET_MET] == 1.0 and m[M.PROJECTION_HEAVY] == 0.0
    assert m[M.ACC_MEAN_BEFORE_PROJECTION] == m[M.ACC_MEAN]


def test_usage_follows_the_annealed_target_every_epoch(tiny_domains):
    result = train(config(budget=0.3, epochs=4, steps=5), domains=tiny_domains)
    targets = [h[M.BUDGET_TARGET] for h in result.history]
    assert targets[0] < 1.0 and targets[-1] == 0.3 and targets == sorted(targets, reverse=True)
    for h in result.history:
        assert h[M.BUDGET_TARGET] - 0.03 <= h["budget_usage/alpha"] <= h[M.BUDGET_TARGET] + 1e-12


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_each_epoch_reports_the_size_it_would_end_with_and_leaves_the_switches_alone(tiny_domains):
    # What a Pareto-aware scheduler compares: while the budget anneals, the current masks are larger than any model
    # the trial can end with; the reported size is theirs projected to the budget, as finalize would.
    seen = []

    class Look(Hook):  # runs after the built-in hooks, CountHook included
        def after_epoch(self, trainer):
            sizes = {name: d.input_size for name, d in trainer.domains.items()}
            reference = reference_counts(trainer.model, sizes).params
            usage = usage_summary(trainer.model.masks(), trainer.costs)["usage"]
            model = copy.deepcopy(trainer.model)
            unprojected = count(materialize(model), sizes).params / reference
            project_to_budget(model, trainer.cfg.budget.beta, trainer.costs)
            projected = count(materialize(model), sizes).params / reference
            seen.append((trainer.epoch_metrics, unprojected, projected, usage))

    train(config(budget=0.3, epochs=4, steps=5), domains=tiny_domains, hooks=[Look()])
    for metrics, unprojected, projected, usage in seen:
        assert metrics[M.PARAMS_RATIO] == pytest.approx(projected)
        # the switches are as training left them: the usage the epoch reported, before the hooks ran
        assert all(float(usage[d]) == pytest.approx(metrics[M.budget_usage_key(d)]) for d in tiny_domains)
    first, unprojected = seen[0][0], seen[0][1]
    assert first[M.BUDGET_TARGET] > 0.5 and first[M.PARAMS_RATIO] < unprojected - 0.1


def test_at_budget_one_no_switch_turns_off(tiny_domains):
    # The old dual-ascent formulation let cross-entropy noise switch 12-36% of switches off at beta 1.
    result = train(config(budget=1.0, epochs=3, steps=10, switch_lr=0.05), domains=tiny_domains)
    for masks in result.model.masks().values():
        assert all(bool(m.all()) for m in masks.values())
    assert result.metrics[M.UNION_FRACTION] == pytest.approx(1.0)  # the union is the whole backbone


def test_switches_are_fixed_once_the_budget_has_annealed(tiny_domains):
    cfg = config(budget=0.5, sharing="jaccard", epochs=4, steps=5, anneal_start=0.0, anneal_end=0.5)
    snapshots = []

    class Snapshot(Hook):
        def after_epoch(self, trainer):
            snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if "latent" in n})

    trainer = Trainer(build_for(cfg, tiny_domains), tiny_domains, cfg, hooks=[Snapshot()])
    trainer.fit()
    # epochs 1-2 anneal (latents move); epochs 3-4 fine-tune BN and heads on the final masks
    assert any(not torch.equal(snapshots[0][n], snapshots[1][n]) for n in snapshots[0])
    assert all(torch.equal(snapshots[1][n], snapshots[3][n]) for n in snapshots[1])
    assert trainer.history[3]["loss/sharing"] == trainer.history[2]["loss/sharing"]  # logged, masks unchanged


def _three_domains():
    return {name: tiny_domain(name, 3, seed=seed) for seed, name in enumerate(("p", "q", "r"))}


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_each_sharing_loss_raises_overlap_above_none_at_the_same_usage():
    domains = _three_domains()

    def run(sharing):
        cfg = config(budget=0.4, sharing=sharing, epochs=2, steps=10, switch_lr=0.01, weight=30.0)
        return train(cfg, domains=domains).metrics

    none = run("none")
    for sharing in ("int", "union", "jaccard", "consensus"):
        m = run(sharing)
        for d in domains:
            assert m[M.budget_usage_key(d)] == pytest.approx(none[M.budget_usage_key(d)], abs=0.03)
        assert m[M.OVERLAP] > none[M.OVERLAP] + 0.1, sharing
        assert m[M.UNION_FRACTION] < none[M.UNION_FRACTION], sharing


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_learnable_weight_stays_bounded_and_comes_back_over_a_long_run(tiny_domains):
    # target 0 is never reached: the weight rises, but never past max_weight (exp(-w) L + w grew without bound)
    cfg = config(budget=0.5, sharing="jaccard", epochs=1, steps=60, weight="learnable", target=0.0, max_weight=4.0,
                 dual_lr=2.0, anneal_end=1.0)
    trainer = Trainer(build_for(cfg, tiny_domains), tiny_domains, cfg)
    trainer.fit()
    assert 3.9 < trainer.sharing_weight() < 4.0
    # then a target always met: the clipped dual variable brings the weight back down within as many steps
    trainer.cfg = dataclasses.replace(cfg, sharing=dataclasses.replace(cfg.sharing, target=1.0),
                                      train=dataclasses.replace(cfg.train, epochs=2))
    trainer.fit()
    assert 0 < trainer.sharing_weight() < 0.01


@pytest.mark.parametrize("baseline", ONE_SHOT_BASELINES)
def test_one_shot_baselines_keep_their_switches_and_train_bn_and_heads(tiny_domains, baseline):
    cfg = config(budget=0.5, sharing=baseline, epochs=1, steps=3)
    trainer = Trainer(build_for(cfg, tiny_domains), tiny_domains, cfg)
    drawn = trainer.model.masks()
    head = trainer.model.fc.heads["alpha"].weight.detach().clone()
    trainer.fit()
    after = trainer.model.masks()
    assert all(torch.equal(drawn[d][n], after[d][n]) for d in drawn for n in drawn[d])
    assert not torch.equal(head, trainer.model.fc.heads["alpha"].weight)
    m = finalize(trainer).metrics
    assert all(0.5 - 0.03 <= m[M.budget_usage_key(d)] <= 0.5 for d in tiny_domains)
    shared = all(torch.equal(after["alpha"][n], after["beta"][n]) for n in after["alpha"])
    assert shared == (baseline != "random")


def test_learning_beats_chance(tiny_domains):
    result = train(config(budget=1.0, epochs=3, steps=10, lr=0.05), domains=tiny_domains)
    assert result.metrics["acc/alpha"] > 100 / 3 + 15


def test_round_robin_trains_every_domain_and_the_learnable_weight_follows_dual_ascent(tiny_domains):
    seen = []
    cfg = config(sharing="jaccard", epochs=1, steps=4, schedule="round_robin", weight="learnable")
    train(cfg, domains=tiny_domains, callback=seen.append)
    (epoch,) = seen
    assert {M.loss_key(f"ce/{d}") for d in tiny_domains} <= set(epoch)  # one domain a step, each in turn
    # The weight starts at max_weight / 2 (15). At budget 1.0 every switch is on, so jaccard is 0, below its target:
    # each step that still learns switches (3 of 4: the budget settles at anneal_end=0.6) lowers rho by
    # dual_lr * target.
    s = cfg.sharing
    assert epoch[M.LOSS_SHARING] == 0.0
    assert epoch[M.SHARING_WEIGHT] == pytest.approx(s.max_weight / (1 + math.exp(3 * s.dual_lr * s.target)))


def test_every_key_training_writes_is_named_by_bap_metrics(tiny_domains):
    """One home per metric name: the trainer, its hooks and the final metrics write only keys that bap.metrics
    defines (a constant, or one of its per-domain key functions), so MLflow, Tune and the plots agree."""
    result = train(config(budget=0.5, sharing="union", epochs=1, steps=2), domains=tiny_domains)
    constants = {v for k, v in vars(M).items() if k.isupper() and isinstance(v, str)}
    per_domain = [M.acc_key, M.val_acc_key, M.budget_usage_key, M.macs_key, M.projected_off_key,
                  M.projected_share_key]
    named = constants | {key(d) for key in per_domain for d in tiny_domains} | {"epoch", "step"}
    named |= {M.loss_key(f"ce/{d}") for d in tiny_domains}
    written = set(result.metrics) | {k for entry in result.history for k in entry}
    assert written - named == set(), "keys written by hand instead of through bap.metrics"
    assert {M.VAL_ACC_MEAN, M.PARAMS_RATIO, M.MACS_RATIO, M.LOSS_SHARING} <= written


def test_a_net_without_switches_trains_its_bn_and_heads_with_the_same_trainer(tiny_domains):
    # The plain baseline benchmarks/switch_overhead times: no switch optimizer, no sharing term, nothing pruned.
    cfg = config(budget=1.0, sharing="union", epochs=2, steps=3)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, unswitched=["*"]))
    model = build_for(cfg, tiny_domains)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = Trainer(model, tiny_domains, cfg)
    trainer.fit()
    assert trainer.switch_optimizer is None and M.LOSS_SHARING not in trainer.history[-1]
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
    result = finalize(trainer)
    assert result.metrics[M.PARAMS_CONV_RATIO] == 1.0 and result.metrics[M.SWITCHES] == 0
