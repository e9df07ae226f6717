import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from orchestrator.cli import rewrite_sweep_args
from orchestrator.config import plan_sweep
from orchestrator.config_store import compose_sweep_config
from orchestrator.sweep import DRIVER_ARENAS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("budgets=0.25,0.5,1.0", "budgets=[0.25,0.5,1.0]"),
        ("budgets=[0.25,0.5,1.0]", "budgets=[0.25,0.5,1.0]"),
        ("budgets=0.5", "budgets=[0.5]"),
        ("seeds=range(0,3)", "seeds=[0,1,2]"),
        ("methods=none,jaccard", "methods=[none,jaccard]"),
        ("backbones=resnet26", "backbones=[resnet26]"),
        ("++budgets=0.25,1.0", "++budgets=[0.25,1.0]"),
        ("+seeds=1,2", "+seeds=[1,2]"),
        ("domain_sets=[[dtd,svhn],[gtsrb]]", "domain_sets=[[dtd,svhn],[gtsrb]]"),
        ("domain_sets=[dtd,svhn],[gtsrb]", "domain_sets=[[dtd,svhn],[gtsrb]]"),
        ("domain_sets=[dtd,vgg-flowers]", "domain_sets=[[dtd,vgg-flowers]]"),
        ("domain_sets=[]", "domain_sets=[]"),
        ("budgets=null", "budgets=null"),
        ("~budgets", "~budgets"),
    ],
)
def test_rewrite_axis_args(arg, expected):
    assert rewrite_sweep_args([arg]) == [expected]


@pytest.mark.parametrize("elements", ["'my net',\"it's\"", "'null','1.5',resnet26,'a\\\\b'", "dtd,vgg-flowers"])
def test_the_comma_form_reads_as_hydra_reads_the_list_form(elements):
    rewritten = compose_sweep_config(rewrite_sweep_args([f"backbones={elements}"])).backbones
    assert rewritten == compose_sweep_config([f"backbones=[{elements}]"]).backbones
    assert all(isinstance(b, str) for b in rewritten) and len(rewritten) == elements.count(",") + 1


def test_other_args_are_untouched():
    argv = ["train.epochs=3", "budget.beta=0.5", "data.domains=[dtd,svhn]", "hydra.sweeper.params=a,b", "--cfg",
            "job", "-m", "preset=smoke", "ray.address=ray://head:10001", "model.budgets=1,2"]
    assert rewrite_sweep_args(argv) == argv


@pytest.mark.parametrize("arg", ["domain_sets=dtd,svhn", "domain_sets=dtd", "budgets=interval(0,1)"])
def test_ambiguous_axis_values_are_refused_with_the_fix(arg):
    with pytest.raises(ValueError, match=r"domain_sets=\[dtd,svhn\]|list the values"):
        rewrite_sweep_args([arg])


def test_unquoted_non_ascii_value_gets_the_quoting_that_works():
    with pytest.raises(ValueError, match="""write data.root='"/data/données"'"""):
        rewrite_sweep_args(["data.root=/data/données"])
    quoted = ['data.root="/data/données"']
    assert rewrite_sweep_args(quoted) == quoted
    overrides = compose_sweep_config(quoted)  # and Hydra takes the quoted form
    assert overrides.data.root == "/data/données"


def test_hydra_alone_rejects_the_comma_form():
    # Why the rewrite exists: without --multirun Hydra refuses a sweep value.
    with pytest.raises(ConfigCompositionException, match="Ambiguous value for argument"):
        compose_sweep_config(["budgets=0.25,0.5,1.0"])
    assert compose_sweep_config(rewrite_sweep_args(["budgets=0.25,0.5,1.0"])).budgets == [0.25, 0.5, 1.0]


def test_rewritten_axes_compose_into_the_grid():
    cfg = compose_sweep_config(rewrite_sweep_args(
        ["domain_sets=[digits,faces],[scenes]", "methods=none,jaccard", "seeds=range(0,2)", "budgets=1.0"]))
    assert cfg.domain_sets == [["digits", "faces"], ["scenes"]]
    assert len(plan_sweep(cfg).trials) == 2 * 2 * 2


def test_exact_command_line_through_hydra_main(tmp_path):
    """`python -m orchestrator.cli` runs the real @hydra.main wrapper that orchestrator.sweep uses."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "budgets=0.25,0.5,1.0", "preset=smoke", "methods=none,jaccard"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert sorted({t["budget"] for t in out["trials"]}) == [0.25, 0.5, 1.0]
    assert len(out["trials"]) == 6 and out["experiment"] == "smoke"
    assert "ok: 6 trial(s) valid" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # the dry run leaves no Hydra output dir behind


def test_the_dry_run_of_a_search_prints_its_space(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "search=optuna", "search.num_samples=8", "methods=union,jaccard",
         "search.lr=[0.001,0.1]"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"experiment": "smoke", "search": {
        "algorithm": "optuna", "sampler": "tpe", "seed": 0, "num_samples": 8,
        "objectives": {"acc_mean": "max", "params_ratio": "min"},
        "fixed": {"backbone": "resnet26", "domains": None, "seed": 0},
        "space": {"budget": {"uniform": [0.2, 1.0]}, "method": {"choice": ["union", "jaccard"]},
                  "lr": {"loguniform": [0.001, 0.1]}}}}
    assert "ok: a search of 8 trial(s), valid" in proc.stderr


@pytest.mark.parametrize("arg, message", [
    ("budget.beta=2", "error: budget.beta=2.0 is outside (0, 1]"),  # a fixed key, checked as the config is made
    ("budgets=0.5,1.5", "budgets has 1.5, outside (0, 1]"),  # an axis, checked by validate
])
def test_an_invalid_config_exits_2_with_its_message_and_no_traceback(tmp_path, arg, message):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", arg], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_the_old_budget_key_still_works_with_a_warning():
    with pytest.warns(FutureWarning, match="budget.budget is deprecated; write budget.beta=0.5"):
        assert rewrite_sweep_args(["budget.budget=0.5", "budgets=0.5"]) == ["budget.beta=0.5", "budgets=[0.5]"]
    assert compose_sweep_config(rewrite_sweep_args(["budget.beta=0.5"])).budget.beta == 0.5


def test_the_old_name_of_the_methods_axis_is_rewritten_with_a_printed_warning(tmp_path):
    with pytest.warns(FutureWarning, match="sharing is deprecated; write methods=none,union"):
        assert rewrite_sweep_args(["sharing=none,union", "search.sharing=[int]"]) == [
            "methods=[none,union]", "search.methods=[int]"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sharing=none,union"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sharing is deprecated; write methods=none,union" in proc.stderr
    assert {t["method"] for t in json.loads(proc.stdout.splitlines()[0])["trials"]} == {"none", "union"}


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_sweep_drivers_threads_share_its_few_malloc_arenas():
    """orchestrator.sweep.main limits glibc's arenas before Ray and Tune start the driver's threads."""
    script = ("import orchestrator.cli, orchestrator.sweep; from tests.malloc_arenas import arenas_used; "
              "orchestrator.cli.run_hydra = lambda task: print(arenas_used(threads=8)); orchestrator.sweep.main()")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert int(out.split()[-1]) <= DRIVER_ARENAS


def test_a_key_that_is_not_there_gets_the_one_meant(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "num_samples=8", "trian.epochs=3", "budgets=0.5",
                           "search=optuna", "hydra/job_logging=disabled"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: Could not override 'num_samples': no such key; did you mean `search.num_samples`?",
        "error: Could not override 'trian.epochs': no such key; did you mean `train.epochs`?"]


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_report_and_train_against_an_unreachable_mlflow_say_so_in_seconds(tmp_path):
    from tests.orchestrator.helpers import closed_port_uri

    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": closed_port_uri()}
    for module, args in (("orchestrator.report", ["experiment=x"]), ("orchestrator.train", ["budget=0.5"])):
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert f"error: MLflow at {env['MLFLOW_TRACKING_URI']} (MLFLOW_TRACKING_URI / mlflow.tracking_uri) is " \
               "unreachable" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
