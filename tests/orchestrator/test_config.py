import dataclasses
import os

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from bap.config import BASELINES, ExperimentConfig, SharingConfig
from orchestrator.config import (
    SchedulerConfig, SearchConfig, Searched, SweepConfig, domain_set_name, plan_sweep, resolve_paths, trial_config,
    trial_name,
)
from orchestrator.config_store import compose_sweep_config


@pytest.mark.parametrize("preset", ["smoke", "study", "vd_resnet26", "sketch_resnet50"])
def test_every_preset_composes_into_the_dataclasses(preset):
    cfg = compose_sweep_config([f"preset={preset}"])
    assert type(cfg) is SweepConfig
    assert type(cfg.scheduler) is SchedulerConfig
    assert cfg.experiment == preset
    for params in plan_sweep(cfg).trials:
        assert isinstance(trial_config(cfg, params), ExperimentConfig)


def test_smoke_preset_is_a_fast_cpu_sweep():
    cfg = compose_sweep_config(["preset=smoke"])
    assert cfg.model.width == 0.25 and cfg.data.name == "embedded" and cfg.data.image_size == 32
    assert (cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size, cfg.train.device) == (4, 25, 32, "cpu")
    assert cfg.model.weights == "embedded"  # pretrained on the embedded source, no download
    assert sorted(cfg.budgets) == [0.25, 0.5, 1.0]
    assert len(plan_sweep(cfg).trials) == 3
    # a bare `python -m orchestrator.sweep` is this sweep
    assert compose_sweep_config([]) == cfg


def test_study_preset_sweeps_the_default_against_every_baseline_on_one_draw():
    cfg = compose_sweep_config(["preset=study"])
    assert set(cfg.methods) == {SharingConfig().loss, "none", *BASELINES}  # annealed magnitude included
    assert cfg.budgets == [1.0, 0.75, 0.5, 0.25, 0.1] and cfg.seeds == [0, 1, 2, 3]
    assert len(plan_sweep(cfg).trials) == 140
    smoke = compose_sweep_config(["preset=smoke"])
    assert (cfg.train, cfg.model, cfg.data) == (smoke.train, smoke.model, smoke.data)  # the smoke sweep's trials
    assert compose_sweep_config(["preset=study", "data.seed=3"]).data.seed == 3  # another draw of data and backbone


def test_paper_presets_sweep_the_papers_grid():
    vd = compose_sweep_config(["preset=vd_resnet26"])
    assert (vd.model.backbone, vd.data.name) == ("resnet26", "decathlon")
    assert vd.budgets == [1.0, 0.75, 0.5, 0.25]
    assert vd.methods == ["none", "int", "union", "jaccard", "consensus", "random_shared", "magnitude_shared"]
    assert len(plan_sweep(vd).trials) == 28
    assert vd.model.source_domain == "imagenet12"
    sketch = compose_sweep_config(["preset=sketch_resnet50"])
    assert (sketch.model.backbone, sketch.data.name, sketch.ray.gpus_per_trial) == ("resnet50", "imagenet_sketch", 1.0)


def test_command_line_overrides_a_preset():
    cfg = compose_sweep_config(["preset=smoke", "experiment=mine", "train.epochs=1", "budgets=[0.5]",
                                "scheduler=asha", "ray.address=auto"])
    assert (cfg.experiment, cfg.train.epochs, cfg.budgets, cfg.scheduler.name, cfg.ray.address) == (
        "mine", 1, [0.5], "asha", "auto")


def test_data_root_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BAP_DECATHLON_ROOT", "/datasets/vd")
    assert compose_sweep_config(["data=decathlon"]).data.root == "/datasets/vd"


def test_tracking_uri_defaults(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert compose_sweep_config().mlflow.tracking_uri == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert SweepConfig().mlflow.tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize(
    "override, error, match",
    [("trian.epochs=3", ConfigCompositionException, "trian"),  # a misspelt key
     ("backbone=resnet99", MissingConfigException, "resnet99"),  # an unknown group option
     ("train.epochs=many", ConfigCompositionException, "epochs"),  # a wrong type
     ("model.backbone=vgg", ValueError, "model.backbone='vgg'"),  # a value the dataclass refuses
     ("budgets=0.5", ConfigCompositionException, "budgets")],  # a scalar for a list (without the CLI's rewrite)
)
def test_bad_values_fail_at_composition(override, error, match):
    with pytest.raises(error, match=match):
        compose_sweep_config([override])


def test_axes_default_to_the_fixed_values():
    cfg = SweepConfig()
    assert plan_sweep(cfg).axes == {"backbone": ["resnet26"], "domains": [None], "method": ["union"], "budget": [1.0],
                               "seed": [0]}


def test_the_plans_trials_are_the_ordered_product():
    cfg = SweepConfig(budgets=[0.5, 1.0], methods=["none", "jaccard"], seeds=[0, 1], domain_sets=[["a", "b"], ["c"]])
    trials = plan_sweep(cfg).trials
    assert len(trials) == 2 * 2 * 2 * 2
    assert trials[0] == {"backbone": "resnet26", "domains": ["a", "b"], "method": "none", "budget": 0.5, "seed": 0}
    assert trials[1]["seed"] == 1 and trials[2]["budget"] == 1.0
    assert len({trial_name(t) for t in trials}) == len(trials)


def test_trial_config_applies_the_axis_values():
    cfg = SweepConfig(sharing_weight="learnable")
    cfg.model.weights = "w/{backbone}.pt"
    exp = trial_config(cfg, {"backbone": "resnet50", "domains": ["dtd"], "method": "int", "budget": 0.25, "seed": 3})
    assert (exp.model.backbone, exp.model.weights, exp.data.domains) == ("resnet50", "w/resnet50.pt", ["dtd"])
    assert (exp.sharing.loss, exp.sharing.learnable, exp.budget.beta, exp.train.seed) == ("int", True, 0.25, 3)
    assert cfg.model.backbone == "resnet26"  # the sweep config is not modified
    with pytest.raises(ValueError, match="budget.beta=1.5"):
        trial_config(cfg, {"backbone": "resnet26", "domains": None, "method": "int", "budget": 1.5, "seed": 0})


def test_an_optuna_plan_holds_its_space_and_keeps_the_other_axes_fixed():
    cfg = compose_sweep_config(["search=optuna", "methods=[union,jaccard]", "search.sharing_weight=[1,30]",
                                "search.lr=[0.001,0.1]"])
    plan = plan_sweep(cfg)
    assert plan.trials == []  # the sampler picks them as trials finish
    assert plan.axes == {"backbone": ["resnet26"], "domains": [None], "seed": [0]}
    assert plan.space == {"budget": Searched("uniform", (0.2, 1.0)),
                          "method": Searched("choice", ("union", "jaccard")),
                          "sharing_weight": Searched("loguniform", (1.0, 30.0)),
                          "lr": Searched("loguniform", (0.001, 0.1))}
    # search.methods, when given, replaces the axis as the methods to choose from
    cfg = compose_sweep_config(["search=optuna", "search.methods=[none,int]", "search.budget=[0.3,0.9]"])
    assert plan_sweep(cfg).space == {"budget": Searched("uniform", (0.3, 0.9)),
                                     "method": Searched("choice", ("none", "int"))}


def test_the_default_search_is_the_grid():
    plan = plan_sweep(compose_sweep_config([]))
    assert plan.cfg.search.algorithm == "grid" and plan.space == {} and len(plan.trials) == 3


def test_trial_config_applies_a_searchs_sharing_weight_and_learning_rates():
    cfg = SweepConfig(sharing_weight="learnable")
    params = {"backbone": "resnet26", "domains": None, "method": "union", "budget": 0.43712, "seed": 0}
    fixed = trial_config(cfg, params)
    assert fixed.sharing.learnable and (fixed.train.lr, fixed.train.switch_lr) == (cfg.train.lr, cfg.train.switch_lr)
    drawn = trial_config(cfg, {**params, "sharing_weight": 3.5, "lr": 0.02, "switch_lr": 3e-4})
    assert (drawn.sharing.weight, drawn.train.lr, drawn.train.switch_lr) == (3.5, 0.02, 3e-4)
    assert drawn.budget.beta == 0.43712


def test_a_continuous_budget_reads_to_three_digits_in_the_trial_name():
    params = {"backbone": "resnet26", "domains": None, "method": "union", "budget": 0.43712, "seed": 0}
    assert trial_name(params) == "resnet26_all_union_b0.437_s0"
    # Two budgets that round alike share a name; Tune's trial id in each folder name keeps them apart
    # (test_an_optuna_sweep_... checks the folders).
    assert trial_name({**params, "budget": 0.43749}) == trial_name(params)
    assert [trial_name({**params, "budget": b})[len("resnet26_all_union_"):] for b in (0.125, 0.25, 1.0)] == \
        ["b0.125_s0", "b0.25_s0", "b1_s0"]


def test_domain_set_name():
    assert domain_set_name(None) == "all" and domain_set_name(["dtd", "svhn"]) == "dtd+svhn"


def test_resolve_paths_makes_local_paths_absolute(tmp_path):
    cfg = SweepConfig()
    cfg.data = dataclasses.replace(cfg.data, name="decathlon", root="data/vd")
    cfg.mlflow.tracking_uri = "sqlite:///mlflow.db"
    cfg.ray.storage_path = "s3://bucket/ray"
    out = resolve_paths(cfg, str(tmp_path))
    assert out.data.root == os.path.join(str(tmp_path), "data/vd")
    assert out.mlflow.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert out.ray.storage_path == "s3://bucket/ray" and out.model.weights is None
    assert cfg.data.root == "data/vd"


def test_the_old_name_of_the_methods_axis_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"sharing is deprecated; write methods=\['none', 'union'\]"):
        cfg = SweepConfig(sharing=["none", "union"])
    assert cfg.methods == ["none", "union"]
    assert plan_sweep(cfg).axes["method"] == ["none", "union"]
    with pytest.warns(DeprecationWarning, match="search.sharing is deprecated; write search.methods="):
        assert SearchConfig(sharing=["int"]).methods == ["int"]
    with pytest.raises(ValueError, match="are one setting; keep methods="):
        SweepConfig(sharing=["none"], methods=["union"])
