import dataclasses
import json
import shutil

import pytest

from bap.config import SHARING_OPTIONS
from orchestrator.config import SweepConfig, plan_sweep
from orchestrator.config_store import compose_sweep_config
from orchestrator.validate import SweepConfigError, validate
from tests.bap.data.test_decathlon import make_tree
from tests.bap.data.test_imagefolder import make_tree as make_image_tree

list_domains = pytest.importorskip("bap.data").list_domains  # domain checks need bap.data
CPU2 = {"CPU": 2.0, "GPU": 0.0}


def errors_of(cfg, resources=None):
    with pytest.raises(SweepConfigError) as info:
        validate(plan_sweep(cfg), resources)
    return info.value.errors


def sweep(**changes):
    cfg = SweepConfig(**changes)
    cfg.mlflow.tracking_uri = "sqlite:///mlflow.db"
    return cfg


def with_data(cfg, **changes):
    cfg.data = dataclasses.replace(cfg.data, **changes)
    return cfg


def test_presets_and_defaults_are_valid():
    validate(plan_sweep(sweep()), CPU2)
    validate(plan_sweep(compose_sweep_config(["preset=smoke"])), CPU2)
    validate(plan_sweep(compose_sweep_config(["budgets=[0.25,0.5]", "domain_sets=[[digits,faces],[scenes]]"])),
             CPU2)


def test_error_is_a_value_error_listing_every_problem():
    cfg = sweep(budgets=[0.0, 1.5], backbones=["vgg"], methods=["jacard"])
    with pytest.raises(ValueError) as info:
        validate(plan_sweep(cfg))
    text = str(info.value)
    for fragment in ("budgets has 0.0", "budgets has 1.5", "'vgg'", "'jacard'"):
        assert fragment in text


def test_budget_outside_unit_interval():
    [error] = errors_of(sweep(budgets=[0.5, 1.01]))
    assert "budgets has 1.01, outside (0, 1]" in error


def test_unknown_backbone_lists_the_known():
    [error] = errors_of(sweep(backbones=["resnet26", "resnet18"]))
    assert "backbones has unknown 'resnet18'; known: resnet26, resnet50" in error


def test_unknown_method_lists_the_known():
    [error] = errors_of(sweep(methods=["jaccard", "dice"]))
    assert "'dice'" in error and "none, int, union, jaccard" in error


def test_unknown_domain_lists_the_known():
    [error] = errors_of(sweep(domain_sets=[["digits", "symbols"]]))
    assert "domain_sets has unknown embedded domain(s) 'symbols'" in error
    assert all(d in error for d in list_domains(SweepConfig().data))
    [error] = errors_of(with_data(sweep(), domains=["cifar100"]))
    assert error.startswith("data.domains has unknown embedded domain(s) 'cifar100'")


def test_bad_domain_sets():
    errors = errors_of(sweep(domain_sets=[[], ["digits", "digits"]]))
    assert any("domain_sets[0]=[] names no domain" in e for e in errors)
    assert any("domain_sets[1]=['digits', 'digits'] repeats a domain" in e for e in errors)


@pytest.mark.parametrize("key", ["budgets", "backbones", "methods", "seeds"])
def test_empty_axis(key):
    [error] = errors_of(sweep(**{key: []}))
    assert error.startswith(f"{key}=[] sweeps nothing")


def test_repeated_axis_value():
    [error] = errors_of(sweep(seeds=[0, 1, 0]))
    assert "seeds=[0, 1, 0] repeats a value" in error


def test_missing_data_root(tmp_path):
    missing = str(tmp_path / "nowhere")
    [error] = errors_of(with_data(sweep(), name="decathlon", root=missing))
    assert f"data.root={missing} does not exist" in error and "BAP_DECATHLON_ROOT" in error


def test_missing_decathlon_annotation_names_the_file(tmp_path):
    make_tree(str(tmp_path))
    (tmp_path / "annotations" / "svhn_val.json").unlink()
    [error] = errors_of(with_data(sweep(), name="decathlon", root=str(tmp_path), domains=["dtd", "svhn"]))
    assert "svhn_val.json" in error and "'svhn'" in error


def test_dry_run_runs_the_data_sets_own_checks(tmp_path):
    # a malformed annotation file and an image outside the root fail here, not inside every trial
    make_tree(str(tmp_path))
    (tmp_path / "annotations" / "dtd_train.json").write_text("{}")
    [error] = errors_of(with_data(sweep(), name="decathlon", root=str(tmp_path), domains=["dtd", "svhn"]))
    assert "dtd_train.json of domain 'dtd' lacks key(s)" in error
    make_tree(str(tmp_path))
    path = tmp_path / "annotations" / "svhn_val.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "../../secret.jpg"
    path.write_text(json.dumps(data))
    [error] = errors_of(with_data(sweep(), name="decathlon", root=str(tmp_path), domains=["dtd", "svhn"]))
    assert "leaves the data root" in error


def test_model_options_are_checked_against_the_built_layers():
    cfg = sweep()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, unswitched=["nope"]))
    [error] = errors_of(cfg)
    assert error.startswith("model.unswitched=['nope']") and "layer1.0.conv1" in error


def test_missing_sketch_split_and_extra_domain_on_disk(tmp_path):
    make_image_tree(str(tmp_path))
    make_image_tree(str(tmp_path), domain="mine")
    shutil.rmtree(tmp_path / "flowers" / "test")
    cfg = with_data(sweep(), name="imagenet_sketch", root=str(tmp_path), domains=["flowers", "mine"])
    [error] = errors_of(cfg)  # `mine` is accepted: bap.data reads any ImageFolder domain on disk
    assert "flowers/test" in error and "'flowers'" in error


def test_missing_weights_and_one_file_for_several_backbones(tmp_path):
    cfg = sweep(backbones=["resnet26", "resnet50"])
    cfg.model.weights = str(tmp_path / "w.pt")
    errors = errors_of(cfg)
    assert any("put {backbone} in the path" in e for e in errors)
    (tmp_path / "resnet26.pt").write_bytes(b"")
    cfg.model.weights = str(tmp_path / "{backbone}.pt")
    errors = errors_of(cfg)
    assert any("resnet50.pt does not exist" in e for e in errors)
    assert any("resnet26.pt: weights=" in e and "is not a loadable state dict" in e for e in errors)


class Planted:
    def __reduce__(self):
        return (print, ("planted code ran",))


def test_the_weights_a_sweep_will_use_are_loaded_up_front(tmp_path):
    # A directory, a pickle with code, a file of another width: each named at validation (the dry run), not in a
    # trial naming a temporary copy.
    import torch

    from bap import build_model
    from bap.models.weights import single_domain_state_dict

    cfg = sweep()
    cfg.model = dataclasses.replace(cfg.model, width=0.125, weights=str(tmp_path))
    assert any(e == f"model.weights file {tmp_path} is a directory, not a file; train one with the pretrain entry "
               "point, fix the path, or set model.weights=null for a randomly initialised backbone"
               for e in errors_of(cfg))
    for name, content in (("code.pt", {"conv1.weight": Planted()}),
                          ("wide.pt", single_domain_state_dict(build_model("resnet26", {"a": 2}, width=0.25), "a"))):
        torch.save(content, tmp_path / name)
    cfg.model = dataclasses.replace(cfg.model, weights=str(tmp_path / "code.pt"))
    [error] = errors_of(cfg)
    assert error.startswith(f"model.weights file {tmp_path}/code.pt: weights=") and "not a loadable state dict" in error
    cfg.model = dataclasses.replace(cfg.model, weights=str(tmp_path / "wide.pt"))
    [error] = errors_of(cfg)
    assert "does not match resnet26 at width 0.125" in error and "shape mismatches" in error
    narrow = single_domain_state_dict(build_model("resnet26", {"a": 2}, width=0.125), "a")
    torch.save(narrow, tmp_path / "narrow.pt")
    cfg.model = dataclasses.replace(cfg.model, weights=str(tmp_path / "narrow.pt"))
    validate(plan_sweep(cfg), CPU2)


def test_silently_ignored_or_meaningless_settings_are_refused():
    cfg = compose_sweep_config(["domain_sets=[[digits,faces]]", "data.domains=[scenes]"])
    assert any(e.startswith("data.domains=['scenes'] is ignored when domain_sets is set") for e in errors_of(cfg))
    cfg = compose_sweep_config(["search=optuna", "search.num_samples=4", "search.startup_trials=10"])
    assert any(e.startswith("search.startup_trials=10 is more than search.num_samples=4") for e in errors_of(cfg))
    cfg = sweep()
    cfg.model = dataclasses.replace(cfg.model, width=1e-9)
    assert any(e.startswith("model.width=1e-09 leaves resnet26 layers of 1 channel(s), too few to prune")
               for e in errors_of(cfg))


def test_resources_the_cluster_cannot_satisfy():
    cfg = sweep()
    cfg.ray = dataclasses.replace(cfg.ray, cpus_per_trial=4, gpus_per_trial=0.5)
    errors = errors_of(cfg, CPU2)
    assert any(e.startswith("ray.cpus_per_trial=4 but the cluster has 2 CPU(s)") for e in errors)
    assert any(e.startswith("ray.gpus_per_trial=0.5 but the cluster has 0 GPU(s)") for e in errors)
    validate(plan_sweep(cfg), {"CPU": 8.0, "GPU": 1.0})
    validate(plan_sweep(cfg))  # no resources given: nothing to compare against


def test_ray_settings_ray_itself_would_reject():
    cfg = sweep()
    cfg.ray = dataclasses.replace(cfg.ray, cpus_per_trial=0, gpus_per_trial=1.5, max_concurrent_trials=0,
                                  max_failures=-2)
    errors = "\n".join(errors_of(cfg))
    for key in ("cpus_per_trial=0", "gpus_per_trial=1.5", "max_concurrent_trials=0", "max_failures=-2"):
        assert f"ray.{key}" in errors


def test_cuda_device_needs_gpus_per_trial():
    cfg = sweep()
    cfg.train = dataclasses.replace(cfg.train, device="cuda")
    [error] = errors_of(cfg)
    assert error.startswith("train.device=cuda but ray.gpus_per_trial=0")


def test_asha_settings():
    cfg = sweep()
    cfg.scheduler = dataclasses.replace(cfg.scheduler, name="asha", grace_period=20, reduction_factor=1)
    errors = errors_of(cfg)
    assert any("scheduler.grace_period=20 must be in [1, max_t=10]" in e for e in errors)
    assert any("scheduler.reduction_factor=1" in e for e in errors)
    cfg.scheduler.name = "hyperband"
    assert any("scheduler=none or scheduler=asha or scheduler=pareto" in e for e in errors_of(cfg))


def test_pareto_stopping_settings():
    validate(plan_sweep(compose_sweep_config(["scheduler=pareto"])), CPU2)
    validate(plan_sweep(compose_sweep_config(["scheduler=pareto", "search=optuna"])), CPU2)  # composes with both
    assert errors_of(compose_sweep_config(["scheduler=pareto", "train.epochs=3", "scheduler.grace_period=3",
                                           "scheduler.margin=-1"])) == [
        "scheduler.grace_period=3 must be in [1, train.epochs=3) epochs: stopping after the last epoch would save "
        "only the final pruning",
        "scheduler.margin=-1.0 must be >= 0 accuracy points (percent), e.g. 2.0"]


def test_bap_config_checks_run_for_every_trial():
    [error] = errors_of(sweep(sharing_weight="lots"))
    assert "sharing.weight='lots'" in error


def test_empty_experiment_and_tracking_uri():
    cfg = sweep(experiment=" ")
    cfg.mlflow.tracking_uri = ""
    errors = errors_of(cfg)
    assert any(e.startswith("experiment is empty") for e in errors)
    assert any(e.startswith("mlflow.tracking_uri is empty") for e in errors)


def optuna_sweep(*overrides):
    return compose_sweep_config(["search=optuna", *overrides])


def test_the_optuna_search_is_valid_on_the_smoke_preset_and_a_grid_ignores_search_keys():
    validate(plan_sweep(optuna_sweep("search.sharing_weight=[1,30]", "search.lr=[0.001,0.1]")), CPU2)
    validate(plan_sweep(compose_sweep_config(["search.num_samples=0", "search.budget=[2,1]"])), CPU2)


def test_every_bad_search_key_is_named_with_its_fix():
    errors = errors_of(optuna_sweep(
        "search.num_samples=0", "search.sampler=cmaes", "search.startup_trials=1", "search.cost=flops",
        "search.budget=[0.5,1.2]",
        "search.sharing_weight=[0,3]", "search.lr=[0.1,0.01]", "search.switch_lr=[0.001]"))
    expected = [
        "search.num_samples=0 must be >= 1",
        "search.sampler='cmaes' is unknown; use tpe or nsga2",
        "search.startup_trials=1 must be >= 2 (the random trials the sampler starts from), or null for the sampler's "
        "default",
        "search.cost='flops' is no cost a trial reports; use params_ratio or macs_ratio",
        "search.budget=[0.5, 1.2] must be [low, high] with 0 < low < high <= 1 (fractions of the backbone, sampled "
        "uniformly), e.g. search.budget=[0.2,1.0]",
        "search.sharing_weight=[0.0, 3.0] must be [low, high] with 0 < low < high (sampled log-uniformly), e.g. "
        "search.sharing_weight=[1,30], or null to keep sharing_weight",
        "search.lr=[0.1, 0.01] must be [low, high] with 0 < low < high (sampled log-uniformly), e.g. "
        "search.lr=[0.001,0.1], or null to keep train.lr",
        "search.switch_lr=[0.001] must be [low, high]",
    ]
    assert len(errors) == len(expected)
    for fragment in expected:
        assert any(fragment in e for e in errors), fragment
    [error] = errors_of(optuna_sweep("search.budget=[0,0.5]"))
    assert error.startswith("search.budget=[0.0, 0.5] must be [low, high] with 0 < low < high <= 1")


def test_a_search_chooses_among_known_losses():
    assert errors_of(optuna_sweep("search.methods=[union,dice]")) == [
        "search.methods has unknown method(s) 'dice'; known: " + ", ".join(SHARING_OPTIONS)]
    assert "search.methods=[] leaves no method to choose" in errors_of(optuna_sweep("search.methods=[]"))[0]
    [repeated] = errors_of(optuna_sweep("search.methods=[union,union]"))
    assert "search.methods=['union', 'union'] repeats a method" in repeated
    # the `methods` axis, the default choices, is checked once, as an axis
    assert errors_of(optuna_sweep("methods=[union,dice]")) == [
        "methods has unknown method(s) 'dice'; known: " + ", ".join(SHARING_OPTIONS)]


def test_a_search_keeps_one_backbone_domain_set_and_seed():
    errors = errors_of(optuna_sweep("seeds=[0,1]", "domain_sets=[[digits,faces],[scenes]]",
                                    "backbones=[resnet26,resnet50]"))
    assert sorted(errors) == [
        "backbones has 2 values but search=optuna searches one backbone, domain set and seed; keep one "
        "(backbones=[resnet26]) or use search=grid",
        "domain_sets has 2 values but search=optuna searches one backbone, domain set and seed; keep one "
        "(domain_sets=[digits,faces]) or use search=grid",
        "seeds has 2 values but search=optuna searches one backbone, domain set and seed; keep one (seeds=[0]) or use "
        "search=grid",
    ]


def test_a_search_refuses_asha_whose_stopped_trials_have_no_final_accuracy():
    assert errors_of(optuna_sweep("scheduler=asha")) == [
        "scheduler=asha stops trials before their final acc_mean, which search=optuna's sampler learns from; "
        "use scheduler=none, or scheduler=pareto (its stopped trials are told to the sampler as pruned)"]


def test_an_unknown_search_algorithm():
    assert errors_of(compose_sweep_config(["search.algorithm=bayes"])) == [
        "search.algorithm='bayes' is unknown; use search=grid or search=optuna"]


def test_a_search_builds_its_corner_trials_so_bap_configs_own_checks_run():
    # sharing_weight is bap's to check (bap.config.SharingConfig), as in every grid trial
    [error] = errors_of(optuna_sweep("sharing_weight=lots"))
    assert "sharing.weight='lots'" in error and error.startswith("trial {")


@pytest.mark.parametrize("name", ["", "lab/front", "a:b"])
def test_a_model_registry_name_mlflow_would_refuse_fails_before_the_sweep(name):
    cfg = compose_sweep_config([f"model_registry='{name}'"])
    with pytest.raises(SweepConfigError, match="model_registry=.* is no MLflow model name"):
        validate(plan_sweep(cfg))


def test_storage_and_store_that_cannot_be_written_are_named_before_anything_starts(tmp_path):
    import sqlite3

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = sweep()
    cfg.ray = dataclasses.replace(cfg.ray, storage_path=str(blocker / "ray"))
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path}/corrupt.db"
    (tmp_path / "corrupt.db").write_text("not a database")
    errors = errors_of(cfg, CPU2)
    assert f"ray.storage_path={blocker}/ray cannot be written: {blocker} is a file, not a folder; make it writable " \
           "or point ray.storage_path at a writable folder" in errors
    assert any(e.startswith(f"mlflow.tracking_uri=sqlite:///{tmp_path}/corrupt.db: the SQLite store cannot be used: "
                            "file is not a database; it is corrupt") for e in errors)

    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked)
    holder.execute("CREATE TABLE t (x)")
    holder.commit()
    holder.execute("BEGIN EXCLUSIVE")  # another process writing
    cfg = sweep()
    cfg.ray = dataclasses.replace(cfg.ray, storage_path=str(tmp_path / "runs"))
    cfg.mlflow.tracking_uri = f"sqlite:///{locked}"
    try:
        [error] = errors_of(cfg, CPU2)
    finally:
        holder.rollback()
        holder.close()
    assert "database is locked; another process holds it" in error
    validate(plan_sweep(cfg), CPU2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "corrupt.db", "locked.db"]  # checks leave nothing
