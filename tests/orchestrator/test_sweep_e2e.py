"""End-to-end: the real entry points on local Ray, read back through MlflowClient.

Small settings (width 0.125, 2 epochs of 2 steps, a few images per class) keep each sweep to well under a
minute on 2 cores; the code path is the one `python -m orchestrator.sweep` runs for a lab.
"""

from __future__ import annotations

import glob
import os
import pickle
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

import bap
from bap import metrics as M
from orchestrator.front import FRONT_TABLE
from orchestrator.pareto import pareto_front
from orchestrator.stopping import dominated_by
from orchestrator.tracking import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARETO_TAG, STOPPED_TAG, SWEEP_TAG,
                                   TRIAL_ID_TAG)

pytestmark = pytest.mark.slow

TINY = [
    "model.weights=null", "model.width=0.125", "data.train_per_class=8", "data.val_per_class=4",
    "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=8", "train.eval_batch_size=64",
]


def env_for(tmp_path):
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", BAP_CACHE_DIR=str(tmp_path / "cache"),
               RAY_ADDRESS="", PYTHONUNBUFFERED="1")
    return env


def run(module, args, tmp_path, timeout=600, cwd=None):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or tmp_path, env=env_for(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def start(module, args, tmp_path):
    """A driver in a session of its own: a signal to its process group is what Ctrl-C in a terminal sends."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=tmp_path, env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def client_and_experiment(tmp_path, name):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return client, experiment.experiment_id


def children(client, experiment_id):
    return client.search_runs([experiment_id], filter_string=f"tags.`{TRIAL_ID_TAG}` != ''")


def test_sweep_records_parent_children_front_and_models(tmp_path):
    proc = run("orchestrator.sweep", ["budgets=0.25,0.5,1.0", "experiment=e2e", "model_registry=e2e-front", *TINY],
               tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 finished trial(s), 0 failed" in proc.stdout
    client, experiment_id = client_and_experiment(tmp_path, "e2e")
    parents = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_params.png", "pareto_macs.png", "pareto.html", "pareto.csv", FRONT_TABLE} <= parent_files
    # The sweep's page: opens on training runs, its summary drawn against finished trials, its description.
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    history = client.get_metric_history(parent.info.run_id, M.TRIALS_FINISHED)
    assert max(m.step for m in history) == 3 and max(m.value for m in history) == 3
    assert M.hypervolume_key("resnet26/all") in parent.data.metrics and parent.data.metrics[M.FRONT_SIZE] >= 1
    note = parent.data.tags[MLFLOW_RUN_NOTE]
    assert "started with: `python -m orchestrator.sweep budgets=0.25,0.5,1.0 experiment=e2e" in note
    assert "| domain set | backbone |" in note
    assert "open the sweep: `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui" in proc.stdout
    assert f"/#/experiments/{experiment_id}/runs/{parent.info.run_id}" in proc.stdout

    runs = children(client, experiment_id)
    assert sorted(float(r.data.params["budget"]) for r in runs) == [0.25, 0.5, 1.0]
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.status == "FINISHED"
        m, p = r.data.metrics, r.data.params
        for key in ("acc_mean", "params_total", "params_ratio", "macs_mean", "macs_ratio", "union_fraction",
                    "acc/digits", "budget_met"):
            assert key in m, key
        assert m["budget_met"] == 1.0 and m["budget_usage/digits"] <= float(p["budget"])
        assert p["model.width"] == "0.125" and p["sharing"] == "union" and p["train.epochs"] == "2"
        assert [x.step for x in client.get_metric_history(r.info.run_id, "val/acc_mean")] == [1, 2]
        # params_ratio per epoch (1, 2) and the pruned model's on a step of its own after the last epoch
        assert [x.step for x in client.get_metric_history(r.info.run_id, "params_ratio")] == [1, 2, 3]
        assert r.data.tags[PARETO_TAG] in ("true", "false")
        files = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.yaml", "domains.csv", "model"} <= files
        model = bap.load(client.download_artifacts(r.info.run_id, "model/model.bap", str(tmp_path)))
        assert bap.count(model, (32, 32)).params == int(m["params_total"])
    by_budget = {float(r.data.params["budget"]): r.data.metrics for r in runs}
    runs_by_id = {r.info.run_id: r for r in runs}
    assert by_budget[0.25]["params_total"] < by_budget[1.0]["params_total"]
    assert any(r.data.tags[PARETO_TAG] == "true" for r in runs)

    versions = client.search_model_versions("name = 'e2e-front'")
    front = {r.info.run_id for r in runs if r.data.tags[PARETO_TAG] == "true"}
    assert {v.run_id for v in versions} == front and len(versions) == len(front)
    assert all(v.tags["budget"] == runs_by_id[v.run_id].data.params["budget"] for v in versions)

    csv = client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path))
    assert len(open(csv).read().strip().splitlines()) == 4

    report = run("orchestrator.report", ["experiment=e2e"], tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "params_ratio" in report.stdout and report.stdout.count("resnet26") == 4  # 3 trials, 1 hypervolume
    (line,) = [x for x in report.stdout.splitlines() if x.strip().startswith("resnet26/all")]
    assert parent.info.run_name in line and "3 trials" in line
    assert float(line.split()[-1]) == pytest.approx(parent.data.metrics[M.hypervolume_key("resnet26/all")], abs=0.01)


def test_train_entry_point_records_one_run_without_ray(tmp_path):
    proc = run("orchestrator.train", ["budget=0.5", "experiment=single", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, experiment_id = client_and_experiment(tmp_path, "single")
    (only,) = client.search_runs([experiment_id])
    assert only.data.params["budget"] == "0.5" and "acc_mean" in only.data.metrics
    assert {"config.yaml", "domains.csv", "model"} <= {a.path for a in client.list_artifacts(only.info.run_id)}
    assert not (tmp_path / "runs" / "ray").exists()


def test_bad_config_fails_before_anything_starts(tmp_path):
    proc = run("orchestrator.sweep", ["budgets=0.5,1.5", "backbones=[resnet18]", *TINY], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "budgets" in out and "1.5" in out and "resnet18" in out
    assert not (tmp_path / "runs" / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_driver_resumes_only_missing_trials(tmp_path):
    # Longer epochs than TINY's: the kill must land between a trial's first epoch and its end (with 2 steps
    # that window is well under a second, and a poll could miss it).
    tiny = [a for a in TINY if not a.startswith("train.steps_per_epoch=")] + ["train.steps_per_epoch=12"]
    args = ["budgets=0.25,0.5,1.0", "experiment=resume", "ray.max_concurrent_trials=1", *tiny]
    driver = subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args], cwd=tmp_path,
                              env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        def finished_and_next_started():
            # Touch the database only once the driver has created it (its sweep directory comes after that):
            # two processes creating MLflow's tables at once would race.
            if not list((tmp_path / "runs" / "ray").glob("resume_*")):
                return False
            client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
            experiment = client.get_experiment_by_name("resume")
            if experiment is None:
                return False
            runs = children(client, experiment.experiment_id)
            done = [r for r in runs if r.info.status == "FINISHED"]
            # the next trial has logged an epoch, so Tune has long since saved the first one as finished
            return len(done) == 1 and any("val/acc_mean" in r.data.metrics for r in runs if r not in done)

        wait_for(finished_and_next_started, 600, "one finished trial and a second one training")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    client, experiment_id = client_and_experiment(tmp_path, "resume")
    # The second trial may finish between the last poll and the kill; what matters is that some are missing.
    finished = {r.info.run_id: r.info.end_time for r in children(client, experiment_id)
                if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 3

    proc = run("orchestrator.sweep", [*args, "resume=true"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = children(client, experiment_id)
    assert len(runs) == 3 and len({r.data.tags[TRIAL_ID_TAG] for r in runs}) == 3
    assert all(r.info.status == "FINISHED" and "params_total" in r.data.metrics for r in runs)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    for run_id, end_time in finished.items():  # finished trials were not run again
        assert client.get_run(run_id).info.end_time == end_time
    for r in runs:  # every epoch logged exactly once, interrupted trial included
        assert [x.step for x in client.get_metric_history(r.info.run_id, "val/acc_mean")] == [1, 2]


# Epochs long enough (about a second each here) to land a signal between a trial's first epoch and its end.
SLOW = [a for a in TINY if not a.startswith(("train.steps_per_epoch=", "train.epochs="))] + [
    "train.steps_per_epoch=12", "train.epochs=4"]


def store_ready(tmp_path):
    """The driver has created MLflow's tables (its first spool directory comes after its first run): two
    processes creating them at once would race."""
    return (tmp_path / "runs").exists()


def runs_so_far(tmp_path, experiment):
    """Every run of ``experiment`` a driver has recorded so far ([] before it has made the store)."""
    if not store_ready(tmp_path):
        return []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def epoch_logged(tmp_path, experiment):
    return lambda: any("val/acc_mean" in r.data.metrics for r in runs_so_far(tmp_path, experiment))


def one_finished_and_next_training(tmp_path, experiment):
    def check():
        runs = [r for r in runs_so_far(tmp_path, experiment) if TRIAL_ID_TAG in r.data.tags]
        done = [r for r in runs if r.info.status == "FINISHED"]
        return len(done) == 1 and any("val/acc_mean" in r.data.metrics for r in runs if r not in done)
    return check


class Planted:
    """Unpickling it creates ``marker`` (through builtins.open alone, so nothing else must be importable)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def ctrl_c_after_one_finished(args, tmp_path, experiment):
    """Ctrl-C a sweep of one trial at a time once its first trial finished and the next is training; returns the
    driver's stderr once it has exited 130."""
    driver = start("orchestrator.sweep", args, tmp_path)
    try:
        wait_for(one_finished_and_next_training(tmp_path, experiment), 600, "one finished trial and a second training")
        os.killpg(driver.pid, signal.SIGINT)
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, out[-2000:] + err[-2000:]
    return err


def test_ctrl_c_closes_the_sweep_killed_and_resume_restores_only_the_recorded_state(tmp_path):
    args = ["budgets=0.25,0.5,1.0", "experiment=ctrlc", "ray.max_concurrent_trials=1", *SLOW]
    err = ctrl_c_after_one_finished(args, tmp_path, "ctrlc")
    assert "interrupted" in err and "resume=true" in err
    client, experiment_id = client_and_experiment(tmp_path, "ctrlc")
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    assert parent.info.status == "KILLED"
    statuses = sorted(r.info.status for r in children(client, experiment_id))
    assert statuses == ["FINISHED", "KILLED"], statuses  # the third trial never started
    finished = {r.info.run_id: r.info.end_time for r in children(client, experiment_id)
                if r.info.status == "FINISHED"}

    # A file planted in the recorded folder: refused before anything unpickles it.
    tuner_pkl = os.path.join(parent.data.tags[SWEEP_TAG], "tuner.pkl")
    with open(tuner_pkl, "rb") as f:
        good = f.read()
    marker = tmp_path / "planted-code-ran"
    with open(tuner_pkl, "wb") as f:
        pickle.dump(Planted(str(marker)), f)
    refused = run("orchestrator.sweep", [*args, "resume=true"], tmp_path)
    assert refused.returncode != 0 and "not files this sweep recorded" in refused.stderr, refused.stderr[-2000:]
    assert not marker.exists()
    assert client.get_run(parent.info.run_id).info.status == "KILLED"  # a refused resume changes nothing

    # The genuine folder resumes, from another working directory too (relative paths are the launch dir's).
    with open(tuner_pkl, "wb") as f:
        f.write(good)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run("orchestrator.sweep", [*args, "resume=true"], tmp_path, cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 finished trial(s), 0 failed" in proc.stdout
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    runs = children(client, experiment_id)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    for run_id, end_time in finished.items():
        assert client.get_run(run_id).info.end_time == end_time
    for r in runs:
        assert [x.step for x in client.get_metric_history(r.info.run_id, "val/acc_mean")] == [1, 2, 3, 4]
    assert not (elsewhere / "runs").exists()


def test_a_trial_whose_worker_dies_is_failed_and_the_sweep_exits_non_zero(tmp_path):
    args = ["budgets=0.25,0.5", "experiment=crash", "ray.max_concurrent_trials=1", *SLOW]
    driver = start("orchestrator.sweep", args, tmp_path)
    try:
        wait_for(epoch_logged(tmp_path, "crash"), 600, "the first trial's first epoch")
        subprocess.run(["pkill", "-KILL", "-f", "ray::ImplicitFunc"], check=True)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 1, out[-2000:] + err[-2000:]
    assert "1 finished trial(s), 1 failed" in out
    client, experiment_id = client_and_experiment(tmp_path, "crash")
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    assert parent.info.status == "FAILED"
    by_status = {r.info.status: r for r in children(client, experiment_id)}
    assert sorted(by_status) == ["FAILED", "FINISHED"]
    assert "bap.error" in by_status["FAILED"].data.tags


def test_sigterm_stops_a_single_trial_as_killed(tmp_path):
    proc = start("orchestrator.train", ["budget=0.5", "experiment=term", *SLOW], tmp_path)
    try:
        wait_for(epoch_logged(tmp_path, "term"), 300, "the first epoch")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    client, experiment_id = client_and_experiment(tmp_path, "term")
    (only,) = client.search_runs([experiment_id])
    assert only.info.status == "KILLED"


def test_a_uri_storage_path_creates_no_local_folder_and_resumes_by_its_uri(tmp_path):
    store = f"file://{tmp_path}/store"  # a URI like s3://, served by the local disk
    args = ["budgets=0.5", "experiment=uri", f"ray.storage_path={store}", *TINY]
    proc = run("orchestrator.sweep", args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("file:")]  # no ./file:/... copy
    client, experiment_id = client_and_experiment(tmp_path, "uri")
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    sweep_dir = parent.data.tags[SWEEP_TAG]
    assert sweep_dir.startswith(store) and (tmp_path / "store" / os.path.basename(sweep_dir) / "tuner.pkl").exists()
    (trial,) = children(client, experiment_id)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = run("orchestrator.sweep", [*args, f"resume={sweep_dir}"], tmp_path, cwd=elsewhere)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming sweep {sweep_dir}" in again.stdout
    assert client.get_run(trial.info.run_id).info.end_time == trial.info.end_time  # nothing ran twice


def test_an_asha_sweep_runs_to_its_front(tmp_path):
    # ASHA reads val/acc_mean from every result Tune gets, the trial's final (pruned-model) one included.
    proc = run("orchestrator.sweep", ["budgets=0.25,0.5", "experiment=asha", "scheduler=asha", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 failed" in proc.stdout
    client, experiment_id = client_and_experiment(tmp_path, "asha")
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    assert parent.info.status == "FINISHED"
    # A trial ASHA stopped early did not finish: KILLED, not RUNNING forever and not FINISHED.
    runs = children(client, experiment_id)
    statuses = [r.info.status for r in runs]
    assert len(statuses) == 2 and "FINISHED" in statuses and set(statuses) <= {"FINISHED", "KILLED"}
    assert all(r.data.tags[STOPPED_TAG].startswith("asha at epoch") for r in runs if r.info.status == "KILLED")


def test_a_pareto_sweep_stops_exactly_the_trials_its_finished_ones_dominate(tmp_path):
    # One trial at a time, so each trial is compared with the trials before it; the rule is replayed on what MLflow
    # recorded (every epoch's point), so the test holds whichever trials the data make dominated.
    epochs = 3
    args = ["budgets=0.25,0.5,1.0", "experiment=pareto", "scheduler=pareto", "scheduler.margin=0",
            "ray.max_concurrent_trials=1", *TINY, f"train.epochs={epochs}"]
    proc = run("orchestrator.sweep", args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, experiment_id = client_and_experiment(tmp_path, "pareto")
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    assert parent.info.status == "FINISHED"
    fronts, stopped = {e: [] for e in range(1, epochs + 1)}, 0  # epoch -> the finished trials' front
    for r in sorted(children(client, experiment_id), key=lambda r: r.info.start_time):
        history = {key: {m.step: m.value for m in client.get_metric_history(r.info.run_id, key)}
                   for key in (M.VAL_ACC_MEAN, M.PARAMS_RATIO)}
        points = {e: (history[M.VAL_ACC_MEAN][e], history[M.PARAMS_RATIO][e]) for e in history[M.VAL_ACC_MEAN]}
        expected = next((e for e in sorted(points) if dominated_by(points[e], fronts[e], margin=0)), None)
        if expected is None:
            assert r.info.status == "FINISHED" and STOPPED_TAG not in r.data.tags and len(points) == epochs
            if r.data.metrics[M.PROJECTION_HEAVY] == 0:
                for e, point in points.items():
                    fronts[e] = pareto_front([*fronts[e], point], lambda p: p[0], lambda p: p[1])
        else:  # stopped on that epoch's result, which MLflow has; never finished
            assert (r.info.status, r.data.tags[STOPPED_TAG], len(points)) == ("KILLED", f"pareto at epoch {expected}",
                                                                              expected)
            assert M.ACC_MEAN not in r.data.metrics
            stopped += 1
    metrics = parent.data.metrics
    assert (metrics[M.TRIALS_FINISHED], metrics[M.TRIALS_STOPPED]) == (3 - stopped, stopped)


OPTUNA = ["search=optuna", "search.num_samples=3", "scheduler=none", "search.budget=[0.3,0.9]",
          "search.sharing_weight=[1,30]"]


def test_an_optuna_sweep_runs_the_trials_its_sampler_draws_within_the_ranges(tmp_path):
    proc = run("orchestrator.sweep", [*OPTUNA, "experiment=optuna", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 finished trial(s), 0 failed" in proc.stdout
    client, experiment_id = client_and_experiment(tmp_path, "optuna")
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.algorithm"] == "optuna" and parent.data.params["search.budget"] == "[0.3, 0.9]"
    runs = children(client, experiment_id)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" and M.ACC_MEAN in r.data.metrics for r in runs)
    budgets = [float(r.data.params["budget"]) for r in runs]
    weights = [float(r.data.params["sharing.weight"]) for r in runs]
    assert len(set(budgets)) == 3 and all(0.3 <= b <= 0.9 for b in budgets)
    assert len(set(weights)) == 3 and all(1 <= w <= 30 for w in weights)
    for r in runs:  # the drawn values are the ones the trial trained with
        assert float(r.data.params["budget.beta"]) == float(r.data.params["budget"])
        assert r.info.run_name == f"resnet26_all_union_b{float(r.data.params['budget']):.3g}_s0"
    # Tune's folders: the rounded name plus the trial id, so two budgets that round alike never share one
    folders = {p.name for p in (tmp_path / "runs" / "ray").glob("optuna_*/*") if p.is_dir()}
    assert folders == {f"{r.info.run_name}_{r.data.tags[TRIAL_ID_TAG]}" for r in runs}


def test_an_interrupted_optuna_sweep_resumes_its_searcher(tmp_path):
    args = [*OPTUNA, "experiment=optuna_resume", "ray.max_concurrent_trials=1", *SLOW]
    ctrl_c_after_one_finished(args, tmp_path, "optuna_resume")
    client, experiment_id = client_and_experiment(tmp_path, "optuna_resume")
    before = {r.info.run_id: (r.info.status, r.data.params["budget"], r.info.end_time)
              for r in children(client, experiment_id)}
    assert sorted(status for status, _, _ in before.values()) == ["FINISHED", "KILLED"]

    proc = run("orchestrator.sweep", [*args, "resume=true"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 finished trial(s), 0 failed" in proc.stdout
    runs = children(client, experiment_id)
    # num_samples in all, not three more: the searcher came back from the sweep's folder
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.params["budget"] for r in runs}) == 3
    for r in runs:
        if r.info.run_id in before:  # the interrupted trial went on with its own budget; the finished one never reran
            status, budget, end_time = before[r.info.run_id]
            assert r.data.params["budget"] == budget
            assert status == "KILLED" or r.info.end_time == end_time
    # Optuna was told all three results, the interrupted trial's after the resume included
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    latest = max(glob.glob(os.path.join(parent.data.tags[SWEEP_TAG], "searcher-state-*.pkl")))
    with open(latest, "rb") as f:
        study = pickle.load(f)["_ot_study"]
    told = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert sorted(t.params["budget"] for t in told) == sorted(float(r.data.params["budget"]) for r in runs)
