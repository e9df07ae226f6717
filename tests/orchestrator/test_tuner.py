"""The sweep's Tune side of a search: the param space a plan gives Tune and the Optuna searcher that draws from it
(real Ray Tune and Optuna objects, no trial run)."""

from __future__ import annotations

import optuna
from ray import tune

from bap import metrics as M
from orchestrator.config import plan_sweep
from orchestrator.config_store import compose_sweep_config
from orchestrator import tuner

SEARCH = ["search=optuna", "methods=[union,jaccard]", "search.budget=[0.3,0.9]", "search.sharing_weight=[1,30]"]


def suggestions(plan, n):
    searcher = tuner.searcher(plan)
    searcher.set_search_properties(None, None, tuner.param_space(plan))  # what Tune does with the param space
    return searcher, [searcher.suggest(f"t{i}") for i in range(n)]


def test_a_grid_gives_tune_each_axis_as_a_grid_and_no_searcher():
    plan = plan_sweep(compose_sweep_config(["methods=[union,none]"]))
    assert tuner.searcher(plan) is None
    assert tuner.param_space(plan) == {"backbone": tune.grid_search(["resnet26"]), "domains": tune.grid_search([None]),
                                  "method": tune.grid_search(["union", "none"]),
                                  "budget": tune.grid_search([0.25, 0.5, 1.0]), "seed": tune.grid_search([0])}


def test_a_search_fixes_the_kept_axes_and_draws_the_rest_within_its_ranges():
    plan = plan_sweep(compose_sweep_config(SEARCH))
    space = tuner.param_space(plan)
    assert {k: space[k] for k in ("backbone", "domains", "seed")} == {"backbone": "resnet26", "domains": None,
                                                                       "seed": 0}
    searcher, drawn = suggestions(plan, 8)
    assert searcher.metric == [M.ACC_MEAN, M.PARAMS_RATIO] and searcher.mode == ["max", "min"]
    assert all(set(d) == {"budget", "method", "sharing_weight"} for d in drawn)  # the fixed ones come from Tune
    assert all(0.3 <= d["budget"] <= 0.9 and 1 <= d["sharing_weight"] <= 30 for d in drawn)
    assert {d["method"] for d in drawn} <= {"union", "jaccard"} and len({d["budget"] for d in drawn}) == 8


def test_the_sampler_is_seeded_and_learns_from_both_final_metrics():
    plan = plan_sweep(compose_sweep_config([*SEARCH, "search.sampler=nsga2", "search.cost=macs_ratio"]))
    searcher, drawn = suggestions(plan, 3)
    assert isinstance(searcher._ot_study.sampler, optuna.samplers.NSGAIISampler)
    assert suggestions(plan, 3)[1] == drawn  # the same seed draws the same trials
    assert suggestions(plan_sweep(compose_sweep_config([*SEARCH, "search.sampler=nsga2", "search.seed=1"])), 3)[1] \
        != drawn
    searcher.on_trial_complete("t0", {M.ACC_MEAN: 61.0, M.MACS_RATIO: 0.4, M.PARAMS_RATIO: 0.5})
    (told,) = searcher._ot_study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert told.values == [61.0, 0.4] and told.params["budget"] == drawn[0]["budget"]


def test_a_trial_stopped_before_its_final_result_is_told_to_optuna_as_pruned():
    # scheduler=pareto stops trials after an epoch's result: a cost but no acc_mean. Ray's OptunaSearch would
    # tell Optuna [None, cost], which it refuses, so the trial stayed RUNNING in the study.
    searcher, drawn = suggestions(plan_sweep(compose_sweep_config([*SEARCH, "scheduler=pareto"])), 2)
    searcher.on_trial_complete("t0", {"epoch": 1, M.VAL_ACC_MEAN: 20.0, M.PARAMS_RATIO: 0.5, "done": True})
    searcher.on_trial_complete("t1", {M.ACC_MEAN: 61.0, M.PARAMS_RATIO: 0.5})
    states = {t.params["budget"]: t.state for t in searcher._ot_study.get_trials()}
    assert states == {drawn[0]["budget"]: optuna.trial.TrialState.PRUNED,
                      drawn[1]["budget"]: optuna.trial.TrialState.COMPLETE}


def test_startup_trials_sets_how_many_random_trials_each_sampler_starts_with():
    def sampler(*overrides):
        return suggestions(plan_sweep(compose_sweep_config([*SEARCH, *overrides])), 1)[0]._ot_study.sampler

    assert sampler("search.startup_trials=4")._n_startup_trials == 4
    assert sampler("search.sampler=nsga2", "search.startup_trials=4")._population_size == 4
    assert sampler()._n_startup_trials == 10  # Optuna's own default
