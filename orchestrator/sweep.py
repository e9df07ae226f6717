"""``python -m orchestrator.sweep budgets=0.25,0.5,1.0``: a BAP sweep on Ray Tune, recorded in MLflow.

Config -> validation (before Ray starts) -> pretrained backbone bytes -> one MLflow parent run -> a Tune grid
over the sweep axes (one trial = ``orchestrator.trainable.run_trial``) -> the Pareto front, updated as trials
finish and final at the end, logged to the parent run. ``resume=true`` restores the latest interrupted sweep
of the experiment (``Tuner.restore``) under the same parent run; finished trials are not run again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from orchestrator.config import SweepConfig, resolve_paths, sweep_axes, trial_name
from orchestrator.pretrained import backbone_weights
from orchestrator.front import collect_records, format_table, publish_front
from orchestrator.spool import DEFAULT_SPOOL, Recorder, sync_spools
from orchestrator.tracking import SWEEP_TAG, client_for, ensure_experiment, fail_fast, flatten, with_retries
from orchestrator.trainable import PROGRESS_METRICS, run_trial
from orchestrator.validate import local_resources, validate

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run_id"
CONFIG_FILE = "sweep_config.json"  # the resolved config a sweep started with: resume continues only that sweep
# Keys a resume may change: how to reach the cluster, not what the trials compute.
_RESUME_MAY_CHANGE = ("resume", "ray.address")


class ParetoCallback(tune.Callback):
    """Re-publishes the front to the parent run whenever a trial finishes, so a person watching MLflow sees it
    grow; a failure here is logged, never allowed to stop the sweep."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        try:
            with fail_fast():  # runs in Tune's event loop: skip this update rather than wait out an outage
                client = client_for(self.tracking_uri)
                records = collect_records(client, self.experiment_id, self.parent_run_id)
                if records:
                    publish_front(client, self.parent_run_id, records)
        except Exception as error:
            log.warning("could not update the Pareto front in MLflow yet (%s); the final one is written at the end",
                        error)


def _sweep_dir(cfg: SweepConfig) -> tuple[str, bool]:
    """The Tune experiment directory: the latest restorable one of this experiment with ``resume=true``."""
    root = cfg.ray.storage_path
    if cfg.resume:
        candidates = sorted(
            (d for d in os.listdir(root) if d.startswith(f"{cfg.experiment}_")) if os.path.isdir(root) else [],
            reverse=True,
        )
        for name in candidates:
            path = os.path.join(root, name)
            if tune.Tuner.can_restore(path) and os.path.isfile(os.path.join(path, PARENT_FILE)):
                return path, True
        raise SystemExit(f"error: resume=true but {root} holds no interrupted sweep of experiment "
                         f"{cfg.experiment!r}; start it without resume=true")
    return os.path.join(root, f"{cfg.experiment}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"), False


def _sweep_config(cfg: SweepConfig) -> dict[str, str]:
    return {k: v for k, v in flatten(dataclasses.asdict(cfg)).items() if k not in _RESUME_MAY_CHANGE}


def save_sweep_config(sweep_dir: str, cfg: SweepConfig) -> None:
    with open(os.path.join(sweep_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(_sweep_config(cfg), f, indent=1, sort_keys=True)


def check_same_sweep(sweep_dir: str, cfg: SweepConfig) -> None:
    """Refuse to resume ``sweep_dir`` with a config other than the one it started with: the remaining trials
    would silently run different settings (or a changed axis would be ignored)."""
    path = os.path.join(sweep_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise SystemExit(f"error: {sweep_dir} has no {CONFIG_FILE} (a sweep from an older version): resume it with "
                         "that version, or start a new sweep without resume=true")
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    new = _sweep_config(cfg)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        lines = "\n".join(f"  {k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in changed)
        raise SystemExit(f"error: resume=true with a config that differs from the sweep in {sweep_dir}:\n{lines}\n"
                         "Either start a new sweep (drop resume=true), or resume with the old values.")


def _spool_dir(cfg: SweepConfig) -> str:
    """Where trials keep MLflow writes the server did not take: beside Tune's results when ``ray.storage_path``
    is a directory (one every node mounts, like the compose stack's ``runs`` volume), so the driver and
    ``orchestrator.report --sync`` can replay them. A URI (s3://...) is no directory to append to: each node
    then spools to its own ``runs/mlflow_spool``, which ``orchestrator.report --sync`` replays on that node."""
    if "://" in cfg.ray.storage_path:
        return os.path.abspath(DEFAULT_SPOOL)
    return os.path.join(cfg.ray.storage_path, "mlflow_spool")


def _scheduler(cfg: SweepConfig):
    s = cfg.scheduler
    if s.name == "none":
        return None
    # One more than the epochs: the trial's last report carries its final (pruned-model) metrics.
    max_t = (s.max_t or cfg.train.epochs) + 1
    return ASHAScheduler(time_attr="training_iteration", metric=s.metric, mode=s.mode, max_t=max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor)


SERVICE_TIMEOUT_S = 10.0  # one bounded attempt per service before anything is created
_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"


def check_services(cfg: SweepConfig) -> None:
    """Fail within seconds, naming the variable, the address and the fix, when MLflow or the Ray cluster cannot be
    reached: before any pretraining, MLflow run or Ray job (an unreachable service used to mean minutes of silent
    retries, then a traceback and a parent run left RUNNING)."""
    uri = cfg.mlflow.tracking_uri
    if uri.startswith(("http://", "https://")):
        saved = os.environ.get(_TIMEOUT_ENV)
        os.environ[_TIMEOUT_ENV] = str(int(SERVICE_TIMEOUT_S))  # this one request only (restored below)
        try:
            with fail_fast():
                client_for(uri).search_experiments(max_results=1)
        except Exception as error:  # connection refused, DNS, timeout, HTTP error: all mean "not usable"
            raise SystemExit(f"error: MLflow at {uri} (MLFLOW_TRACKING_URI / mlflow.tracking_uri) is unreachable "
                             f"({type(error).__name__}); start the server (e.g. `docker compose up mlflow`), fix "
                             "the address, or unset it for a local sqlite:///mlflow.db") from None
        finally:
            if saved is None:
                os.environ.pop(_TIMEOUT_ENV, None)
            else:
                os.environ[_TIMEOUT_ENV] = saved
    address = cfg.ray.address
    if address and address != "auto":
        host_port = address.split("://", 1)[-1]
        host, _, port = host_port.rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=SERVICE_TIMEOUT_S).close()
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: the Ray cluster at {address} (RAY_ADDRESS / ray.address) is unreachable "
                             f"({type(error).__name__}: {error}); start it (`ray start --head` or the compose "
                             "stack), fix the address (host:port or ray://host:10001), or unset it for local Ray") \
                from None


def _ray_init(cfg: SweepConfig) -> None:
    if ray.is_initialized():
        return
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=True)
    else:
        # A local Ray gets the package through the working directory it starts in.
        ray.init(num_cpus=int(local_resources()["CPU"]), include_dashboard=False)


def run_sweep(cfg: SweepConfig):
    """Run (or resume) the sweep ``cfg``; returns the final Pareto table (one dict per finished trial)."""
    cfg = resolve_paths(cfg)
    validate(cfg, cluster_resources=None if cfg.ray.address else local_resources())
    check_services(cfg)
    weights = backbone_weights(cfg)
    sweep_dir, resuming = _sweep_dir(cfg)
    if resuming:
        check_same_sweep(sweep_dir, cfg)
    spool_dir = _spool_dir(cfg)

    client = client_for(cfg.mlflow.tracking_uri)
    experiment_id = ensure_experiment(client, cfg.experiment)
    if resuming:
        with open(os.path.join(sweep_dir, PARENT_FILE)) as f:
            parent_run_id = f.read().strip()
        client.update_run(parent_run_id, status="RUNNING")
        print(f"resuming sweep {sweep_dir} (MLflow parent run {parent_run_id})")
    else:
        parent = client.create_run(experiment_id, run_name=os.path.basename(sweep_dir), tags={SWEEP_TAG: sweep_dir})
        parent_run_id = parent.info.run_id
        params = {**flatten(dataclasses.asdict(cfg)), **{f"axis.{k}": str(v) for k, v in sweep_axes(cfg).items()}}
        Recorder(client, parent_run_id, spool_dir).log_params(params)
        os.makedirs(sweep_dir, exist_ok=True)
        save_sweep_config(sweep_dir, cfg)
        with open(os.path.join(sweep_dir, PARENT_FILE), "w") as f:
            f.write(parent_run_id)

    _ray_init(cfg)
    validate(cfg, cluster_resources=ray.cluster_resources())
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep=cfg, experiment_id=experiment_id, parent_run_id=parent_run_id,
                             spool_dir=spool_dir, weights=weights),
        {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial},
    )
    callbacks = [ParetoCallback(cfg.mlflow.tracking_uri, experiment_id, parent_run_id)]
    reporter = tune.CLIReporter(parameter_columns={"budget": "budget", "sharing": "sharing"},
                                metric_columns=list(PROGRESS_METRICS),
                                max_report_frequency=15)
    if resuming:
        tuner = tune.Tuner.restore(sweep_dir, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={name: tune.grid_search(values) for name, values in sweep_axes(cfg).items()},
            tune_config=tune.TuneConfig(
                scheduler=_scheduler(cfg), max_concurrent_trials=cfg.ray.max_concurrent_trials,
                # A finished trial's worker takes the next trial: no new process, imports or data build each time
                # (all trials ask for the same resources, which reuse requires).
                reuse_actors=True,
                trial_name_creator=lambda t: trial_name(t.config),
                trial_dirname_creator=lambda t: f"{trial_name(t.config)}_{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=os.path.basename(sweep_dir), storage_path=cfg.ray.storage_path, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                progress_reporter=reporter, verbose=1,
            ),
        )
    results = tuner.fit()

    # Writes that trials spooled while MLflow was down and could not replay before they ended (a trial
    # replays its own spool on its next successful write, so only an outage at a trial's end leaves any).
    _replay_spools(cfg.mlflow.tracking_uri, spool_dir)
    records = with_retries(lambda: collect_records(client, experiment_id, parent_run_id), "reading the sweep's runs")
    table = with_retries(lambda: publish_front(client, parent_run_id, records) if records else [],
                         "publishing the Pareto front")
    failed = [r for r in results if r.error is not None]
    with_retries(lambda: client.set_terminated(parent_run_id, "FAILED" if failed else "FINISHED"),
                 "closing the parent run")
    print(format_table(table))
    print(f"{len(records)} finished trial(s), {len(failed)} failed; MLflow parent run {parent_run_id} "
          f"in experiment {cfg.experiment!r} at {cfg.mlflow.tracking_uri}")
    if failed:
        for r in failed:
            print(f"failed: {r.path}: {r.error}")
    return table


def _replay_spools(tracking_uri: str, spool_dir: str, timeout_s: float = 120.0) -> None:
    """Replay every spooled trial run, waiting up to ``timeout_s`` for MLflow to come back."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {run: n for run, n in sync_spools(tracking_uri, spool_dir).items() if n}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(2)
    if left:
        print(f"MLflow unreachable: {sum(left.values())} write(s) of {len(left)} run(s) wait in {spool_dir}; "
              f"run `python -m orchestrator.report experiment=... spool_dir={spool_dir} --sync` when it is back")


def main() -> None:
    # Ray Tune's classic progress table (budget, epoch, acc_mean, params_ratio per trial).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from orchestrator.cli import run_hydra

    run_hydra(run_sweep)


if __name__ == "__main__":
    main()
