"""Baselines: one-shot and annealed (gradual magnitude pruning) share a ranking and differ only in schedule; learned
latents can start in the magnitude order (METHOD 10)."""

import pytest
import torch

from bap import metrics as M
from bap.baselines import baseline_scores, magnitude_scores
from bap.budget import select_to_budget
from bap.config import BudgetConfig, ExperimentConfig, ModelConfig, SharingConfig, TrainConfig
from bap.engine.hooks import Hook
from bap.engine.trainer import Trainer
from bap.train import build_for, finalize


def config(sharing, budget=0.5, init_order="uniform", epochs=2, steps=5):
    return ExperimentConfig(
        model=ModelConfig(backbone="resnet26", width=0.125),
        budget=BudgetConfig(beta=budget, init_order=init_order, anneal_start=0.1, anneal_end=0.6),
        sharing=SharingConfig(loss=sharing, weight=1.0),
        train=TrainConfig(epochs=epochs, steps_per_epoch=steps, batch_size=8, eval_batch_size=16, device="cpu",
                          switch_lr=0.01),
    )


class _Masks(Hook):
    """Every step's hard masks and the usage target it was selected for."""

    def __init__(self):
        self.usage = []

    def after_step(self, trainer):
        summary = trainer.switch_report()
        self.usage.append((trainer.budget_target(trainer.step), summary[M.budget_usage_key("alpha")]))


def _fit(cfg, domains, hooks=()):
    torch.manual_seed(0)  # the same frozen backbone for every compared run
    trainer = Trainer(build_for(cfg, domains), domains, cfg, hooks=list(hooks))
    trainer.fit()
    return trainer


@pytest.mark.parametrize("annealed, one_shot", [("magnitude_annealed", "magnitude_shared"),
                                                ("random_shared_annealed", "random_shared")])
def test_an_annealed_baseline_ends_on_its_one_shot_masks_after_following_the_schedule(tiny_domains, annealed,
                                                                                      one_shot):
    steps = _Masks()
    gradual = _fit(config(annealed), tiny_domains, [steps])
    at_once = _fit(config(one_shot), tiny_domains)
    final, fixed = gradual.model.masks(), at_once.model.masks()
    for domain in tiny_domains:
        for name in fixed[domain]:
            assert torch.equal(final[domain][name], fixed[domain][name]), (domain, name)
        assert all(torch.equal(final[domain][n], final["alpha"][n]) for n in final[domain])  # one shared subset
    # the schedule: all on before the anneal, usage tracking the falling target during it, beta after it
    targets = [t for t, _ in steps.usage]
    assert targets[0] == 1.0 and targets[-1] == 0.5 and any(0.5 < t < 1.0 for t in targets)
    for target, usage in steps.usage:
        assert target - 0.02 <= usage <= target + 1e-9
    m = finalize(gradual).metrics
    assert all(0.5 - 0.03 <= m[M.budget_usage_key(d)] <= 0.5 for d in tiny_domains)


def test_an_annealed_baseline_never_trains_its_latents(tiny_domains):
    cfg = config("magnitude_annealed")
    trainer = Trainer(build_for(cfg, tiny_domains), tiny_domains, cfg)
    convs = list(trainer.model.switched_convs().values())
    before = torch.cat([c.latent["alpha"].detach().clone() for c in convs])
    trainer.fit()
    after = torch.cat([c.latent["alpha"].detach() for c in convs])
    # select_to_budget shifts every latent by one constant a step; a gradient step would change the differences
    torch.testing.assert_close(after - after[0], before - before[0], rtol=0, atol=1e-6)


def test_baseline_scores_are_shared_or_per_domain_and_magnitude_ranks_by_weight_norm(tiny_domains):
    model = build_for(config("magnitude_shared"), tiny_domains)
    conv = next(iter(model.switched_convs().values()))
    with torch.no_grad():
        conv.weight[:, 0] *= 100  # the first input channel of the first switched conv: now the largest norm
    scores = magnitude_scores(model)
    assert int(scores[:conv.in_channels].argmax()) == 0
    g = torch.Generator().manual_seed(0)
    shared = baseline_scores(model, "random_shared_annealed", g)
    own = baseline_scores(model, "random", g)
    assert torch.equal(shared["alpha"], shared["beta"]) and not torch.equal(own["alpha"], own["beta"])
    with pytest.raises(ValueError, match="baseline 'union' is not known"):
        baseline_scores(model, "union", g)


def test_magnitude_order_makes_the_anneal_drop_the_lowest_magnitudes_first(tiny_domains):
    cfg = config("union", budget=0.5, init_order="magnitude", epochs=1, steps=1)
    trainer = Trainer(build_for(cfg, tiny_domains), tiny_domains, cfg)
    convs = list(trainer.model.switched_convs().values())
    scores = magnitude_scores(trainer.model)
    for domain in tiny_domains:  # every domain starts in the magnitude order, all switches on
        latents = torch.cat([c.latent[domain].detach() for c in convs]).double()
        assert torch.equal(torch.argsort(latents, stable=True), torch.argsort(scores, stable=True))
        assert bool((latents > convs[0].threshold).all())
    select_to_budget(trainer.model, {d: 0.5 for d in tiny_domains}, trainer.costs)
    kept = torch.cat([c.hard_mask("alpha") for c in convs])
    assert scores[kept].min() >= scores[~kept].max()  # exactly magnitude pruning at the first cut


def test_uniform_order_starts_every_latent_at_init(tiny_domains):
    cfg = config("union", init_order="uniform")
    model = Trainer(build_for(cfg, tiny_domains), tiny_domains, cfg).model
    latents = torch.cat([c.latent["alpha"].detach() for c in model.switched_convs().values()])
    assert bool((latents == cfg.budget.init).all())


def test_bad_order_options_name_the_field():
    with pytest.raises(ValueError, match="budget.init_order='size'"):
        BudgetConfig(init_order="size")
    with pytest.raises(ValueError, match="budget.order_spread=-1"):
        BudgetConfig(order_spread=-1)
