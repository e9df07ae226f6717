"""The compose stack, run as local processes (localstack/), end to end and under faults.

One stack per module: a Ray head without CPUs, two one-CPU Ray workers and an MLflow server with proxied
artifacts, all with token authentication, as docker-compose.yml starts them. Sweeps are submitted two ways:
through the compose ``sweep`` service (docker/sweep.sh) and from this host with only ``RAY_ADDRESS`` and
``MLFLOW_TRACKING_URI`` set. Everything is read back through the MLflow server's REST API.

The faults: a worker node killed mid-trial, the sweep driver killed or interrupted (Ctrl-C), the MLflow server down
during a trial and at the start and the end of a sweep, the Ray head killed. The worker test runs last: it leaves
the stack with one worker.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

import bap
from orchestrator.spool import Recorder, sync_spools
from orchestrator.tracking import RESUMED_TAG, SWEEP_TAG, TRIAL_ID_TAG
from tests.cluster.conftest import POSTGRES_ENV
from localstack import LOCALHOST, base_env, free_port, wait_until

pytestmark = pytest.mark.slow

# Tiny trials (as tests/orchestrator/test_sweep_e2e.py): seconds each on one CPU.
TINY = ["model.weights=null", "model.width=0.125", "data.train_per_class=8", "data.val_per_class=4",
        "train.batch_size=8", "train.eval_batch_size=64"]
QUICK = [*TINY, "train.epochs=2", "train.steps_per_epoch=2"]
# Long enough epochs (about a second each here) to inject a fault between two of them.
SLOW_EPOCHS = [*TINY, "train.steps_per_epoch=12"]


def children(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{TRIAL_ID_TAG}` != ''")


def parents(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")


def epochs(client: MlflowClient, run_id: str, key: str = "val/acc_mean") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def assert_complete(client: MlflowClient, run, n_epochs: int) -> None:
    """A finished trial: final metrics, every per-epoch metric logged exactly once per epoch, artifacts."""
    assert run.info.status == "FINISHED", run.info
    for key in ("acc_mean", "params_total", "params_ratio", "macs_ratio", "budget_met"):
        assert key in run.data.metrics, key
    for key in ("val/acc_mean", "loss/sharing"):  # per-epoch only (params_ratio & co. get a final value too)
        assert epochs(client, run.info.run_id, key) == list(range(1, n_epochs + 1)), key
    assert {"config.yaml", "domains.csv", "model"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def finished_line(process) -> str:
    return next((line for line in process.log().splitlines() if "finished trial(s)" in line), "")


# ---- the stack itself ---------------------------------------------------------------------------------------------
def _get(url: str, headers: dict) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code


def test_health_checks_and_token_authentication(stack, tmp_path):
    # The compose health checks pass against the running services.
    head = stack.head_healthcheck()
    assert head.returncode == 0, head.stdout + head.stderr
    mlflow = stack.mlflow.healthcheck()
    assert mlflow.returncode == 0, mlflow.stderr

    # The dashboard (published on localhost) asks for the token.
    version = f"{stack.dashboard_url}/api/version"
    assert _get(version, {}) == 401
    assert _get(version, {"Authorization": "Bearer not-the-token"}) == 403
    assert _get(version, {"Authorization": f"Bearer {stack.token}"}) == 200
    # MLflow accepts the Host header the containers use, and refuses others (--allowed-hosts).
    search = f"{stack.mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(search, {"Host": "mlflow:5000"}) == 200
    assert _get(search, {"Host": "attacker.example"}) == 403

    # A driver with a wrong token, or none, is refused by the GCS; the right one connects and sees the workers.
    probe = ("import ray; ray.init(); print('CPU', ray.cluster_resources().get('CPU'), "
             "'nodes', sum(n['Alive'] for n in ray.nodes()))")
    home = tmp_path / "home"  # no ~/.ray/auth_token to fall back on
    home.mkdir()
    wrong = {**stack.driver_env(token="0" * 64), "HOME": str(home)}
    missing = {k: v for k, v in {**stack.driver_env(), "HOME": str(home)}.items() if k != "RAY_AUTH_TOKEN"}
    refused = [subprocess.Popen([sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for env in (wrong, missing)]
    good = subprocess.run([sys.executable, "-c", probe], env=stack.driver_env(), capture_output=True, text=True,
                          timeout=120)
    assert good.returncode == 0, good.stderr[-2000:]
    assert "CPU 2.0 nodes 3" in good.stdout  # head (0 CPUs) + two one-CPU workers
    (wrong_out, _), (missing_out, _) = (p.communicate(timeout=120) for p in refused)
    assert refused[0].returncode != 0 and "InvalidAuthToken" in wrong_out, wrong_out[-2000:]
    assert refused[1].returncode != 0 and "no authentication token was found" in missing_out, missing_out[-2000:]


def test_mlflow_backend_is_postgresql_as_in_compose(stack):
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"${POSTGRES_ENV} is not set: MLflow runs on SQLite here (.ci/run starts PostgreSQL)")
    import sqlalchemy

    assert stack.mlflow.backend_uri.startswith("postgresql+psycopg2://")
    engine = sqlalchemy.create_engine(stack.mlflow.backend_uri)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"experiments", "runs", "metrics", "params"} <= tables  # the server created MLflow's schema there


# ---- a sweep through the compose `sweep` service ----------------------------------------------------------------
def test_sweep_service_records_runs_metrics_and_artifacts(stack, experiment, tmp_path):
    server = stack.mlflow
    sweep = stack.sweep_service("sweep", ["budgets=0.5,1.0", f"experiment={experiment}", *QUICK], tmp_path)
    assert sweep.wait(timeout=300) == 0, sweep.tail()
    assert "2 finished trial(s), 0 failed" in finished_line(sweep)

    client = MlflowClient(server.url)
    (parent,) = parents(client, experiment)
    assert parent.info.status == "FINISHED"
    assert {"pareto.csv", "pareto_params.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    runs = children(client, experiment)
    assert sorted(float(r.data.params["budget"]) for r in runs) == [0.5, 1.0]
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert_complete(client, run, n_epochs=2)
        # Proxied artifacts: the worker uploaded over HTTP into the server's store ...
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        stored = glob.glob(str(server.artifacts / "*" / run.info.run_id / "artifacts" / "model" / "model.bap"))
        assert len(stored) == 1
        # ... and the model comes back over HTTP, loadable, with the parameter count MLflow recorded.
        model = bap.load(client.download_artifacts(run.info.run_id, "model/model.bap", str(tmp_path)))
        assert bap.count(model, (32, 32)).params == int(run.data.metrics["params_total"])

    if server.backend_uri.startswith("postgresql"):  # the compose backend: the runs are rows in PostgreSQL
        import sqlalchemy

        engine = sqlalchemy.create_engine(server.backend_uri)
        with engine.connect() as db:
            stored = db.execute(sqlalchemy.text("SELECT count(*) FROM runs r JOIN experiments e ON "
                                                "r.experiment_id = e.experiment_id WHERE e.name = :name"),
                                {"name": experiment}).scalar()
        engine.dispose()
        assert stored == 3  # parent + two trials

    report = subprocess.run([sys.executable, "-m", "orchestrator.report", f"experiment={experiment}"],
                            cwd=tmp_path, env={**base_env(), "MLFLOW_TRACKING_URI": server.url},
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert report.stdout.count("resnet26") == 3  # the two trials, and the sweep's hypervolume line


def test_job_api_runs_the_driver_on_the_head(stack, experiment, tmp_path):
    """From a machine outside the cluster (docs/cluster.md): `ray job submit` through the dashboard's job API;
    the driver runs on the head with the head's MLFLOW_TRACKING_URI, the code from the image."""
    env = {**base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": stack.token, "RAY_ADDRESS": stack.dashboard_url}
    job = subprocess.run(["ray", "job", "submit", "--", "python", "-m", "orchestrator.sweep", "budgets=0.5",
                          f"experiment={experiment}", *QUICK], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "1 finished trial(s), 0 failed" in job.stdout and "succeeded" in job.stdout + job.stderr
    client = MlflowClient(stack.mlflow.url)
    (run,) = children(client, experiment)
    assert_complete(client, run, n_epochs=2)

    refused = subprocess.run(["ray", "job", "list"], env={**env, "RAY_AUTH_TOKEN": "0" * 64}, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0


# ---- faults -----------------------------------------------------------------------------------------------------------
def sweep_with_one_trial_done(stack, experiment: str, tmp_path, name: str):
    """A two-trial sweep, one trial at a time, once its first trial has finished and the second one trains: where
    the driver faults land. Returns its arguments, an MLflow client and the driver."""
    args = ["budgets=0.25,0.5", f"experiment={experiment}", "ray.max_concurrent_trials=1", "train.epochs=3",
            *SLOW_EPOCHS]
    client = MlflowClient(stack.mlflow.url)
    driver = stack.driver(name, args, tmp_path)

    def one_finished_and_next_training():
        runs = children(client, experiment)
        done = [r for r in runs if r.info.status == "FINISHED"]
        return len(done) == 1 and any("val/acc_mean" in r.data.metrics for r in runs if r not in done)

    wait_until(one_finished_and_next_training, 240, "one finished trial and a second one training",
               processes=(driver,))
    return args, client, driver


def test_killed_driver_resumes_only_missing_trials_under_same_parent(stack, experiment, tmp_path):
    args, client, driver = sweep_with_one_trial_done(stack, experiment, tmp_path, "driver")
    driver.kill()
    (first,) = [r for r in children(client, experiment) if r.info.status == "FINISHED"]

    resumed = stack.driver("driver-resumed", [*args, "resume=true"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.tail()
    assert "resuming sweep" in resumed.log()
    assert "2 finished trial(s), 0 failed" in finished_line(resumed)
    runs = children(client, experiment)
    assert len(runs) == 2 and len({r.data.tags[TRIAL_ID_TAG] for r in runs}) == 2  # no trial recorded twice
    (parent,) = parents(client, experiment)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert client.get_run(first.info.run_id).info.end_time == first.info.end_time  # not run again
    for run in runs:
        assert_complete(client, run, n_epochs=3)


def test_mlflow_outage_is_spooled_and_replayed(stack, experiment, tmp_path):
    n_epochs = 4
    client = MlflowClient(stack.mlflow.url)
    driver = stack.driver("driver-outage", ["budgets=0.5", f"experiment={experiment}", f"train.epochs={n_epochs}",
                                            *SLOW_EPOCHS], tmp_path)
    run = wait_until(lambda: next((r for r in children(client, experiment) if "val/acc_mean" in r.data.metrics),
                                  None), 240, "the trial's first epoch in MLflow", processes=(driver,))
    stack.mlflow.kill()
    # Training goes on: the next epochs land in the trial's spool (on the storage every node shares), in the
    # folder of this store and experiment (spool.scoped).
    pattern = str(tmp_path / "runs" / "ray" / "mlflow_spool" / "*" / f"{run.info.run_id}.jsonl")

    def spooled_lines() -> list[str]:
        return [line for path in glob.glob(pattern) for line in open(path)]

    wait_until(lambda: len(spooled_lines()) >= 1, 120, "a spooled write", processes=(driver,))
    spooled = [json.loads(line)["op"] for line in spooled_lines()]
    stack.mlflow.start()  # the same command, database and artifact directory
    assert driver.wait(timeout=300) == 0, driver.tail()
    assert "1 finished trial(s), 0 failed" in finished_line(driver)

    assert "metrics" in spooled
    assert not glob.glob(str(tmp_path / "runs" / "ray" / "mlflow_spool" / "**" / "*.jsonl"), recursive=True)
    (only,) = children(client, experiment)
    assert_complete(client, only, n_epochs=n_epochs)  # nothing lost, nothing twice
    (parent,) = parents(client, experiment)
    assert parent.info.status == "FINISHED"


def test_report_sync_replays_writes_spooled_while_mlflow_was_down(stack, experiment, tmp_path):
    client = MlflowClient(stack.mlflow.url)
    experiment_id = client.create_experiment(experiment)
    run_id = client.create_run(experiment_id).info.run_id
    spool_dir = tmp_path / "spool"
    down = Recorder(MlflowClient(f"http://{LOCALHOST}:{free_port()}"), run_id, str(spool_dir))  # nothing listens
    for epoch in (1, 2, 3):
        down.log_metrics({"val/acc_mean": 10.0 * epoch}, step=epoch)
    down.log_text("budget: 0.5\n", "config.yaml")
    down.terminate("FINISHED")
    assert down.pending() == 5

    def sync():  # the documented recovery command
        return subprocess.run([sys.executable, "-m", "orchestrator.report", f"experiment={experiment}",
                               f"spool_dir={spool_dir}", "sync=true"], cwd=tmp_path,
                              env={**base_env(), "MLFLOW_TRACKING_URI": stack.mlflow.url},
                              capture_output=True, text=True, timeout=120)

    first = sync()
    assert "synced 1 spooled run(s); 0 write(s) still pending" in first.stdout, first.stdout + first.stderr
    assert down.pending() == 0
    assert sync_spools(stack.mlflow.url, str(spool_dir)) == {}  # a second sync finds nothing: nothing doubles
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/acc_mean")] == \
        [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]


def test_ctrl_c_marks_the_sweep_killed_and_resume_finishes_it(stack, experiment, tmp_path):
    args, client, driver = sweep_with_one_trial_done(stack, experiment, tmp_path, "driver-ctrl-c")
    os.killpg(driver.pgid, signal.SIGINT)  # what Ctrl-C in the driver's terminal sends
    assert driver.wait(timeout=120) == 130, driver.tail()
    assert "resume=true" in driver.log()
    (parent,) = parents(client, experiment)
    assert parent.info.status == "KILLED"
    assert sorted(r.info.status for r in children(client, experiment)) == ["FINISHED", "KILLED"]
    (first,) = [r for r in children(client, experiment) if r.info.status == "FINISHED"]

    resumed = stack.driver("driver-ctrl-c-resumed", [*args, "resume=true"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.tail()
    assert "2 finished trial(s), 0 failed" in finished_line(resumed)
    runs = children(client, experiment)
    assert len(runs) == 2 and len({r.data.tags[TRIAL_ID_TAG] for r in runs}) == 2
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert client.get_run(first.info.run_id).info.end_time == first.info.end_time
    for run in runs:
        assert_complete(client, run, n_epochs=3)


def test_mlflow_down_at_the_start_fails_fast_and_creates_no_run(stack, experiment, tmp_path):
    stack.mlflow.kill()
    try:
        started = time.monotonic()
        driver = stack.driver("driver-no-mlflow", ["budgets=0.5", f"experiment={experiment}", *QUICK], tmp_path)
        assert driver.wait(timeout=120) != 0
        assert time.monotonic() - started < 60  # imports included; the check itself is bounded at 10 s
        assert "MLFLOW_TRACKING_URI" in driver.log() and stack.mlflow.url in driver.log()
    finally:
        stack.mlflow.start()
    assert MlflowClient(stack.mlflow.url).get_experiment_by_name(experiment) is None
    assert not (tmp_path / "runs").exists()


def test_mlflow_down_at_the_end_is_closed_by_report_sync(stack, experiment, tmp_path):
    n_epochs = 3
    client = MlflowClient(stack.mlflow.url)
    driver = stack.driver("driver-end-outage", ["budgets=0.5", f"experiment={experiment}", f"train.epochs={n_epochs}",
                                                "mlflow.end_wait_s=5", *SLOW_EPOCHS], tmp_path)
    wait_until(lambda: any("val/acc_mean" in r.data.metrics for r in children(client, experiment)), 240,
               "the trial's first epoch in MLflow", processes=(driver,))
    stack.mlflow.kill()  # down until the sweep has ended
    try:
        assert driver.wait(timeout=300) == 3, driver.tail()
    finally:
        stack.mlflow.start()
    (line,) = [x for x in driver.log().splitlines() if "unreachable at the end of the sweep" in x]
    command = shlex.split(line.split("run: ", 1)[1])
    assert command[:3] == ["python", "-m", "orchestrator.report"] and "sync=true" in command
    (parent,) = parents(client, experiment)
    assert parent.info.status == "RUNNING"  # nothing closed it yet

    sync = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=base_env(), capture_output=True,
                          text=True, timeout=180)
    assert sync.returncode == 0, sync.stdout[-2000:] + sync.stderr[-2000:]
    (only,) = children(client, experiment)
    assert_complete(client, only, n_epochs=n_epochs)  # every spooled write once
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert not glob.glob(str(tmp_path / "runs" / "ray" / "mlflow_spool" / "**" / "*.jsonl"), recursive=True)


def test_ray_head_killed_then_resume_finishes_every_trial_once(stack, experiment, tmp_path):
    args, client, driver = sweep_with_one_trial_done(stack, experiment, tmp_path, "driver-head-lost")
    (first,) = [r for r in children(client, experiment) if r.info.status == "FINISHED"]
    stack.head.kill()
    assert driver.wait(timeout=300) != 0, driver.tail()  # Ray gives up on the lost GCS; nothing left to close runs
    stack.restart_ray()

    resumed = stack.driver("driver-head-restarted", [*args, "resume=true"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.tail()
    assert "2 finished trial(s), 0 failed" in finished_line(resumed)
    runs = children(client, experiment)
    assert len(runs) == 2 and len({r.data.tags[TRIAL_ID_TAG] for r in runs}) == 2
    (parent,) = parents(client, experiment)
    assert parent.info.status == "FINISHED"
    assert client.get_run(first.info.run_id).info.end_time == first.info.end_time
    for run in runs:
        assert_complete(client, run, n_epochs=3)


def test_worker_killed_mid_trial_is_retried_from_its_checkpoint(stack, experiment, tmp_path):
    n_epochs = 5
    client = MlflowClient(stack.mlflow.url)
    driver = stack.driver("driver-node-fault", ["budgets=0.5", f"experiment={experiment}", "ray.max_failures=2",
                                                f"train.epochs={n_epochs}", *SLOW_EPOCHS], tmp_path)
    # A function trainable trains on only once the driver has taken its last report: epoch 2 in MLflow means
    # Tune holds the checkpoint of epoch 1.
    wait_until(lambda: any(len(epochs(client, r.info.run_id)) >= 2 for r in children(client, experiment)), 300,
               "the trial's second epoch (and so a Tune checkpoint the driver holds)", processes=(driver,))
    node = wait_until(lambda: stack.node_running("ray::ImplicitFunc"), 30, "the node running the trial")
    survivor = next(w for w in stack.workers if w is not node and w.alive())
    node.kill()  # the whole node at once: raylet, agents and the trial's worker process

    assert driver.wait(timeout=300) == 0, driver.tail()
    assert "1 finished trial(s), 0 failed" in finished_line(driver)
    assert survivor.alive()

    (only,) = children(client, experiment)  # one trial, one run: the retry found its run again
    assert_complete(client, only, n_epochs=n_epochs)  # no epoch logged twice
    # The retry resumed from a checkpoint, as the trial recorded (a restart from scratch records no such tag; a
    # worker's log line may never reach the driver's output).
    assert 1 <= int(only.data.tags.get(RESUMED_TAG, 0)) < n_epochs, only.data.tags
    # Tune counted exactly one failure of the trial, and it ended TERMINATED.
    (state_file,) = glob.glob(str(tmp_path / "runs" / "ray" / f"{experiment}_*" / "experiment_state-*.json"))
    with open(state_file) as f:
        trials = [(json.loads(state)["status"], json.loads(runtime)["num_failures"])
                  for state, runtime in json.load(f)["trial_data"]]
    assert trials == [("TERMINATED", 1)]
