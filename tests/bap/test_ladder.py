"""The budget ladder: one anneal, a branch per rung, each rung a normal trial's result (bap.ladder)."""

import pytest
import torch

from bap import metrics as M
from bap import train
from bap.config import BudgetConfig, ExperimentConfig, ModelConfig, SharingConfig, TrainConfig
from bap.ladder import check_rungs, fork_step, train_ladder


def config(sharing="union", beta=1.0):
    return ExperimentConfig(
        model=ModelConfig(backbone="resnet26", width=0.125),
        budget=BudgetConfig(beta=beta, anneal_start=0.1, anneal_end=0.6),
        sharing=SharingConfig(loss=sharing, weight=1.0),
        train=TrainConfig(epochs=2, steps_per_epoch=5, batch_size=8, eval_batch_size=16, device="cpu",
                          switch_lr=0.01),
    )


def test_rungs_descend_and_bad_ladders_name_the_fix():
    assert check_rungs(config(), [0.25, 1.0, 0.5, 0.5]) == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="no anneal to share"):
        check_rungs(config("magnitude_shared"), [0.5])
    with pytest.raises(ValueError, match="at least one budget"):
        check_rungs(config(), [])
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        check_rungs(config(), [1.5, 0.5])


def test_each_rung_forks_where_the_anneal_first_allows_its_budget():
    cfg = config()
    assert fork_step(cfg, 1.0, 0.25, 100) == 10  # where the anneal starts: everything still on
    assert fork_step(cfg, 0.25, 0.25, 100) == 60  # the lowest: where the anneal ends
    middle = fork_step(cfg, 0.5, 0.25, 100)
    assert 10 < middle < 60  # the cubic falls fast first: 0.5 is reached well before the end


def test_a_ladder_gives_every_budget_a_trial_and_leaves_the_lowest_rung_a_normal_trial(tiny_domains):
    seen = []
    results = train_ladder(config(), [1.0, 0.5, 0.25], domains=tiny_domains,
                           on_rung=lambda budget, result: seen.append(budget))
    assert seen == [1.0, 0.5, 0.25] and set(results) == {1.0, 0.5, 0.25}
    for budget, result in results.items():
        usage = [result.metrics[M.budget_usage_key(d)] for d in tiny_domains]
        assert all(budget - 0.03 <= u <= budget + 1e-9 for u in usage), (budget, usage)
        assert result.metrics[M.PROJECTION_HEAVY] == 0.0  # each branch ends on its budget, not projected onto it
    assert results[1.0].metrics[M.PARAMS_RATIO] > results[0.5].metrics[M.PARAMS_RATIO] > \
        results[0.25].metrics[M.PARAMS_RATIO]
    # The forks leave the anneal untouched: the lowest rung is exactly the trial the grid runs at that budget.
    grid = train(config(beta=0.25), domains=tiny_domains)
    assert results[0.25].metrics == grid.metrics
    for key, value in grid.model.state_dict().items():
        assert torch.equal(results[0.25].model.state_dict()[key], value), key


def test_a_resumed_ladder_skips_the_rungs_it_finished(tiny_domains):
    results = train_ladder(config(), [1.0, 0.5, 0.25], domains=tiny_domains, skip={1.0, 0.25})
    assert set(results) == {0.5}


def test_an_annealed_baseline_climbs_the_ladder_too(tiny_domains):
    results = train_ladder(config("magnitude_annealed"), [0.5, 0.25], domains=tiny_domains)
    masks = {b: r.model.masks() for b, r in results.items()}
    for name, mask in masks[0.25]["alpha"].items():  # one ranking: the lower rung's subset is inside the higher's
        assert bool((mask <= masks[0.5]["alpha"][name]).all()), name
