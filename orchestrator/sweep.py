"""``python -m orchestrator.sweep budgets=0.25,0.5,1.0``: a BAP sweep on Ray Tune, recorded in MLflow.

Config -> validation -> reachable services -> pretrained backbone bytes -> Ray -> one MLflow parent run -> a
Tune grid over the sweep axes, or the trials an Optuna search draws (one trial = ``orchestrator.trainable.run_trial``)
-> the Pareto front, updated as trials finish and final at the end, logged to the parent run, which is closed in a
true state (FINISHED, FAILED, KILLED). ``resume=true`` (or ``resume=PATH``) restores the sweep its parent run
recorded (``orchestrator.resume``) under the same parent run; finished trials are not run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shlex
import signal
import socket
import sys
import time
from typing import Callable, Iterator

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from bap import metrics as M
from bap.engine.cpu_memory import limit_arenas
from orchestrator.config import SweepConfig, SweepPlan, objectives, plan_sweep, resolve_paths, trial_name
from orchestrator.front import (collect_records, finish_sweep, format_table, log_summary, publish_front, read_sweep,
                                run_record, sweep_note)
from orchestrator.interrupts import after_ray_init, closing, reported
from orchestrator.local_ray import start_local_ray
from orchestrator.mlflow_model import register_front_models
from orchestrator.plots import pareto_table
from orchestrator.pretrained import backbone_weights
from orchestrator.resume import (LAUNCH_DIR_TAG, DigestRecorder, check_restorable, check_same_sweep, find_sweep,
                                 recorded_config, resume_target)
from orchestrator.saved_view import pareto_page, share_pareto_view
from orchestrator.spool import DEFAULT_SPOOL, Recorder, scoped, sync_spools
from orchestrator.stopping import ParetoStopping
from orchestrator.tracking import (COMMAND_TAG, SERVICE_TIMEOUT_S, STOPPED_TAG, SWEEP_TAG, check_mlflow, client_for,
                                   ensure_experiment, flatten, poll, run_page, use_fail_fast_http, with_retries)
from orchestrator.trainable import PROGRESS_METRICS, run_trial
from orchestrator.validate import local_resources, validate

log = logging.getLogger(__name__)
# Malloc arenas for the driver's threads (Ray's and Tune's): with glibc's 8 per core its memory grew with every
# trial of a large sweep (BENCHMARKS.md, large_sweep_real).
DRIVER_ARENAS = 2
# Tune snapshots the whole sweep's state (every trial's) whenever one trial has checkpointed this many times since
# the last snapshot. With 1 that is every epoch of every trial, a cost growing with the sweep (BENCHMARKS.md,
# large_sweep_real); with 2 a trial's newest two checkpoints stay on disk.
TRIAL_CHECKPOINTS_KEPT = 2
PUBLISH_EVERY_S = 10.0  # the live front is redrawn at most this often (and always at the end)
PUBLISH_SHARE = 0.04  # and takes at most this share of the sweep's time (the target is under 5%)
_TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
# A searcher's objectives (acc_mean and the cost) are in a trial's final result only, not in its per-epoch ones.
_TUNE_STRICT_METRICS_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
# search.sampler -> its Optuna class and the argument search.startup_trials sets.
_SAMPLERS = {"tpe": (optuna.samplers.TPESampler, "n_startup_trials"),
             "nsga2": (optuna.samplers.NSGAIISampler, "population_size")}


class SweepProgress(tune.Callback):
    """The parent run as the sweep's live page. As each trial finishes, its record (one MLflow read: that trial's
    run) joins the records kept here and the summary metrics are logged with step = trials finished (a trial the
    scheduler stops is tagged ``STOPPED_TAG`` and counted as stopped); the front
    (plots, tables, description, the tags that change) is republished at most every ``publish_every_s``, or less
    often when publishing is slow, so it takes at most ``PUBLISH_SHARE`` of the sweep's time; the closing
    publishes the final one. Runs on Tune's event loop: with fail-fast HTTP an outage skips an update, and an
    error here is logged, never allowed to stop the sweep."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, scheduler: str = "none",
                 publish_every_s: float = PUBLISH_EVERY_S) -> None:
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.scheduler, self.publish_every_s = scheduler, publish_every_s
        self._records: dict[str, dict] | None = None  # run id -> record; read from MLflow once, on first use
        self._failed = self._stopped = 0
        self._tagged: dict[str, str] = {}
        self._note = ""
        self._dirty, self._next_publish, self._published = False, 0.0, False

    def setup(self, **info) -> None:
        # What MLflow has before any trial event (a resumed sweep's finished and failed trials): read later, a
        # trial that just failed would be counted from MLflow and from its error event both.
        self._safely(self._load)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # Tune marks the result that made the scheduler stop a trial done; a trial's own last result is final.
        if result.get("done") and not result.get("final") and result.get("mlflow_run_id"):
            tag = f"{self.scheduler} at epoch {int(result.get('epoch', 0))}"
            self._update(lambda client: client.set_tag(result["mlflow_run_id"], STOPPED_TAG, tag), stopped=1)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        if result.get("final"):  # else stopped before its final report (a scheduler, Ctrl-C): not a finished trial
            self._update(lambda client: self._add(run_record(client.get_run(result["mlflow_run_id"]))))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._update(lambda client: None, failed=1)

    def on_step_end(self, iteration, trials, **info) -> None:
        if self._dirty and time.monotonic() >= self._next_publish:
            self._safely(self._publish)

    def _add(self, record: dict) -> None:
        if record[M.PARAMS_TOTAL] is not None:
            self._records[record["run_id"]] = record

    def _update(self, change: Callable, failed: int = 0, stopped: int = 0) -> None:
        def update(client) -> None:
            self._load(client)
            self._failed += failed
            self._stopped += stopped
            change(client)
            log_summary(client, self.parent_run_id, list(self._records.values()), self._failed, self._stopped)
            self._dirty = True
            if time.monotonic() >= self._next_publish:
                self._publish(client)
        self._safely(update)

    def _load(self, client) -> None:
        if self._records is None:  # a resumed sweep starts from what MLflow already has
            sweep = read_sweep(client, self.experiment_id, self.parent_run_id)
            self._records = {r["run_id"]: r for r in sweep.records}
            self._failed, self._stopped, self._tagged = sweep.failed, sweep.stopped, sweep.tagged
            self._note = sweep_note(client, client.get_run(self.parent_run_id))

    def _publish(self, client=None) -> None:
        client = client or client_for(self.tracking_uri)
        self._load(client)
        start = time.monotonic()
        if self._records:
            publish_front(client, self.parent_run_id, list(self._records.values()), self._tagged, self._note)
        self._dirty = False
        took = time.monotonic() - start
        log.info("live page: the front of %d trial(s) published in %.2f s", len(self._records), took)
        # The first publish also pays one-time imports (plotly) and creates the tables: it sets no pace.
        pace = took / PUBLISH_SHARE if self._published else 0.0
        self._published = True
        self._next_publish = time.monotonic() + max(self.publish_every_s, pace)

    def _safely(self, step: Callable) -> None:
        try:
            step(client_for(self.tracking_uri))
        except Exception as error:
            log.warning("could not update the sweep's page in MLflow yet (%s); the final front is written at the end",
                        error)


def _new_sweep_dir(cfg: SweepConfig) -> str:
    return f"{cfg.ray.storage_path.rstrip('/')}/{cfg.experiment}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def _spool_dir(cfg: SweepConfig) -> str:
    """Where trials keep MLflow writes the server did not take: beside Tune's results when ``ray.storage_path``
    is a directory (one every node mounts, like the compose stack's ``runs`` volume), so the driver and
    ``orchestrator.report sync=true`` can replay them. A URI (s3://...) is no directory to append to: each node
    then spools to its own ``runs/mlflow_spool``, which ``orchestrator.report sync=true`` replays on that node.
    Either way in the folder of this tracking store and experiment (``spool.scoped``)."""
    root = os.path.abspath(DEFAULT_SPOOL) if "://" in cfg.ray.storage_path else \
        os.path.join(cfg.ray.storage_path, "mlflow_spool")
    return scoped(root, cfg.mlflow.tracking_uri, cfg.experiment)


def _scheduler(cfg: SweepConfig):
    s = cfg.scheduler
    if s.name == "none":
        return None
    if s.name == "pareto":
        return ParetoStopping(grace_period=s.grace_period, margin=s.margin)
    # One more than the epochs: the trial's last report carries its final (pruned-model) metrics.
    max_t = (s.max_t or cfg.train.epochs) + 1
    return ASHAScheduler(time_attr="training_iteration", metric=s.metric, mode=s.mode, max_t=max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor)


class StoppedAsPrunedOptunaSearch(OptunaSearch):
    """Ray's ``OptunaSearch``, which tells Optuna a trial stopped before its final result (``scheduler=pareto``)
    was pruned. The base class would tell it the stopped trial's partial objectives (cost, no acc_mean), which
    Optuna refuses, leaving the trial RUNNING in the study."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result is not None and any(result.get(metric) is None for metric in self.metric):
            result = None
        super().on_trial_complete(trial_id, result, error)


def _searcher(plan: SweepPlan) -> OptunaSearch | None:
    if not plan.space:
        return None
    s = plan.cfg.search
    goals = objectives(s)
    sampler, startup = _SAMPLERS[s.sampler]
    startup_kw = {} if s.startup_trials is None else {startup: s.startup_trials}
    return StoppedAsPrunedOptunaSearch(metric=list(goals), mode=list(goals.values()),
                                       sampler=sampler(seed=s.seed, **startup_kw))


def _param_space(plan: SweepPlan) -> dict:
    if not plan.space:
        return {name: tune.grid_search(values) for name, values in plan.axes.items()}
    space = {name: values[0] for name, values in plan.axes.items()}  # one value each (validate)
    for name, searched in plan.space.items():
        if searched.kind == "choice":
            space[name] = tune.choice(list(searched.values))
        else:
            space[name] = (tune.loguniform if searched.kind == "loguniform" else tune.uniform)(*searched.values)
    return space


def _connect(host: str, port: int) -> None:
    socket.create_connection((host.strip("[]") or "127.0.0.1", port), timeout=SERVICE_TIMEOUT_S).close()


def check_services(cfg: SweepConfig) -> None:
    """Fail within seconds, naming the variable, the address and the fix, when MLflow or the Ray cluster cannot be
    reached: before any pretraining, MLflow run or Ray job (an unreachable service used to mean minutes of silent
    retries, then a traceback and a parent run left RUNNING)."""
    check_mlflow(cfg.mlflow.tracking_uri)
    address = cfg.ray.address
    if address and address != "auto":
        host, _, port = address.split("://", 1)[-1].rpartition(":")
        try:
            _connect(host, int(port))
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
        # A local Ray gets the package through the working directory it starts in; bound to 127.0.0.1, its token
        # file private (orchestrator.local_ray).
        start_local_ray(int(local_resources()["CPU"]))


def run_sweep(cfg: SweepConfig, command: str | None = None):
    """Run (or resume) the sweep ``cfg``; returns the final Pareto table (one dict per finished trial).

    Ends in a true state or exits non-zero: interrupted (Ctrl-C, SIGTERM) -> the parent and unfinished trial runs
    KILLED, exit 130; failed trials -> the parent FAILED, exit 1; MLflow unreachable at the end -> what is left
    spooled for ``orchestrator.report sync=true``, exit 3. ``command``, the command line, goes in the sweep's
    description."""
    resume = resume_target(cfg.resume)
    raw, plan = cfg, plan_sweep(resolve_paths(cfg))
    validate(plan, cluster_resources=None if plan.cfg.ray.address else local_resources())
    check_services(plan.cfg)
    client = client_for(plan.cfg.mlflow.tracking_uri)
    if resume:
        found = find_sweep(client, plan.cfg.experiment, resume)
        plan = plan_sweep(recorded_config(raw, found))
        validate(plan, cluster_resources=None if plan.cfg.ray.address else local_resources())
        check_same_sweep(found.data.params, plan.cfg)
        sweep_dir = found.data.tags[SWEEP_TAG]
        restore_from = check_restorable(sweep_dir, found)  # the file system serving only verified bytes, and path
    else:
        sweep_dir, restore_from = _new_sweep_dir(plan.cfg), None
    cfg = plan.cfg
    _ray_init(cfg)
    after_ray_init()  # Ray's SIGTERM handler replaced ours (orchestrator.interrupts)
    validate(plan, cluster_resources=ray.cluster_resources())  # before any pretraining: a cluster too small fails now
    weights = backbone_weights(plan, in_ray=True)  # a Ray task: inside Ray's CPU accounting

    spool_dir = _spool_dir(cfg)
    experiment_id = ensure_experiment(client, cfg.experiment)
    if resume:
        parent_run_id = found.info.run_id
        client.update_run(parent_run_id, status="RUNNING")
        print(f"resuming sweep {sweep_dir} (MLflow parent run {parent_run_id})")
    else:
        parent_run_id = client.create_run(experiment_id, run_name=os.path.basename(sweep_dir), tags={
            SWEEP_TAG: sweep_dir, LAUNCH_DIR_TAG: os.getcwd(), **({COMMAND_TAG: command} if command else {}),
        }).info.run_id
        share_pareto_view(client, experiment_id, parent_run_id)  # its trials' scatter in the runs page
    parent = Recorder(client, parent_run_id, spool_dir, finish_sweep)
    if not resume:
        parent.log_params({**flatten(dataclasses.asdict(cfg)),
                           **{f"axis.{k}": str(v) for k, v in plan.axes.items()}})
    digests = DigestRecorder(cfg.mlflow.tracking_uri, parent_run_id)

    status, failed, errors = "KILLED", [], {}
    try:
        tuner = _tuner(plan, sweep_dir, restore_from, tune.with_resources(
            tune.with_parameters(run_trial, sweep=cfg, experiment_id=experiment_id, parent_run_id=parent_run_id,
                                 spool_dir=spool_dir, weights=weights),
            {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial},
        ), [SweepProgress(cfg.mlflow.tracking_uri, experiment_id, parent_run_id, cfg.scheduler.name), digests])
        digests.record(sweep_dir)  # tuner.pkl, written as the Tuner was made
        with digests.watching(sweep_dir), _graceful_stop() as stopped, \
                _environ({_TUNE_STRICT_METRICS_ENV: "1"} if plan.space else {}):
            results = tuner.fit()
        failed = [r for r in results if r.error is not None]
        errors = {r.metrics["trial_id"]: f"{type(r.error).__name__}: {r.error}" for r in failed
                  if "trial_id" in r.metrics}
        if not stopped():
            status = "FAILED" if failed else "FINISHED"
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune started
        pass
    except Exception:  # Tune itself broke: the parent must not stay RUNNING
        with contextlib.suppress(Exception, SystemExit), \
                closing("FAILED", lambda: client.set_terminated(parent_run_id, "KILLED")):
            _close(cfg, client, experiment_id, parent_run_id, parent, "FAILED", errors, spool_dir)
        raise

    with closing(status, lambda: client.set_terminated(parent_run_id, "KILLED")):  # a signal here is deferred
        table = _close(cfg, client, experiment_id, parent_run_id, parent, status, errors, spool_dir)
    print(format_table(table))
    print(f"{len(table)} finished trial(s), {len(failed)} failed; "
          f"MLflow parent run {parent_run_id} ({status}) in experiment {cfg.experiment!r} at "
          f"{cfg.mlflow.tracking_uri}")
    for r in failed:
        print(f"failed: {r.path}: {r.error}")
    print(f"open the sweep: {run_page(cfg.mlflow.tracking_uri, experiment_id, parent_run_id)}")
    print(f"its trials' acc_mean against params_ratio: "
          f"{pareto_page(cfg.mlflow.tracking_uri, experiment_id, parent_run_id)}")
    if status == "KILLED":
        print(f"interrupted: unfinished trial runs and the parent run are marked KILLED; resume with the same "
              f"arguments plus resume=true (this sweep: resume={sweep_dir})", file=sys.stderr)
        raise SystemExit(130)
    if failed:
        raise SystemExit(1)
    return table


@contextlib.contextmanager
def _graceful_stop() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM during ``fit`` triggers Tune's own stop (SIGUSR1: it saves the state, stops the trials and
    returns) and is remembered, so the sweep closes as KILLED; a second one raises KeyboardInterrupt."""
    stops: list[int] = []

    def handler(signum, frame) -> None:
        if stops:
            raise KeyboardInterrupt
        stops.append(signum)
        os.kill(os.getpid(), signal.SIGUSR1)

    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:
        signal.signal(signum, handler)
    try:
        # Tune's SIGINT handler would stop it without telling us.
        with _environ({_TUNE_SIGINT_ENV: "1"}):
            yield lambda: bool(stops)
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block, the previous values back afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def _tuner(plan: SweepPlan, sweep_dir: str, restore_from: tuple | None, trainable, callbacks: list) -> tune.Tuner:
    cfg = plan.cfg
    if restore_from:
        # The Tuner's settings (callbacks included) come back from the folder's tuner.pkl, read through the
        # verifying file system (orchestrator.verified_fs), as is everything Tune and the trials read back.
        filesystem, path = restore_from
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=filesystem)
    reporter = tune.CLIReporter(parameter_columns={name: name for name in ("budget", "sharing", *plan.space)},
                                metric_columns=list(PROGRESS_METRICS), max_report_frequency=15)
    return tune.Tuner(
        trainable,
        param_space=_param_space(plan),
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(cfg), max_concurrent_trials=cfg.ray.max_concurrent_trials,
            # A search: num_samples trials its sampler picks; a grid: each combination once.
            search_alg=_searcher(plan), num_samples=cfg.search.num_samples if plan.space else 1,
            # A finished trial's worker takes the next trial: no new process, imports or data build each time
            # (all trials ask for the same resources, which reuse requires).
            reuse_actors=True,
            trial_name_creator=lambda t: trial_name(t.config),
            trial_dirname_creator=lambda t: f"{trial_name(t.config)}_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=os.path.basename(sweep_dir), storage_path=cfg.ray.storage_path, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=TRIAL_CHECKPOINTS_KEPT),
            progress_reporter=reporter, verbose=1,
        ),
    )


def _close(cfg: SweepConfig, client, experiment_id: str, parent_run_id: str, parent: Recorder, status: str,
           errors: dict[str, str], spool_dir: str) -> list[dict]:
    """Replay what trials spooled, then close the sweep (``front.finish_sweep``); when MLflow stays unreachable
    for ``mlflow.end_wait_s``, leave the closing in the parent's spool, say so in one line and exit 3."""
    wait_s = cfg.mlflow.end_wait_s
    # Writes that trials spooled while MLflow was down and could not replay before they ended (a trial
    # replays its own spool on its next successful write, so only an outage at a trial's end leaves any).
    left = _replay_spools(cfg.mlflow.tracking_uri, spool_dir, timeout_s=wait_s)
    if not left:
        try:
            table = with_retries(lambda: finish_sweep(client, experiment_id, parent_run_id, status, errors),
                                 "closing the sweep", timeout_s=wait_s)
        except RuntimeError:
            pass
        else:
            if cfg.model_registry:
                versions = with_retries(lambda: register_front_models(client, table, cfg.model_registry),
                                        "registering the front's models", timeout_s=wait_s)
                print(f"registered {len(versions)} front model(s) as {cfg.model_registry!r} in the Model Registry")
            return table
    parent.finish_sweep(experiment_id, status, errors)
    if not parent.pending():  # the server came back just now and took the closing: read the front it published
        return pareto_table(collect_records(client, experiment_id, parent_run_id))
    pending = {run: n for run, n in sync_spools(cfg.mlflow.tracking_uri, spool_dir, finish_sweep).items() if n}
    print(f"error: MLflow at {cfg.mlflow.tracking_uri} is unreachable at the end of the sweep: {sum(pending.values())} "
          f"write(s) of {len(pending)} run(s), the Pareto front and the parent run's status ({status}) wait in "
          f"{spool_dir}; when it is back, run: python -m orchestrator.report "
          + shlex.join([f"experiment={cfg.experiment}", f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}",
                        f"spool_dir={spool_dir}", "sync=true",
                        *([f"model_registry={cfg.model_registry}"] if cfg.model_registry else [])]), file=sys.stderr)
    raise SystemExit(3)


def _replay_spools(tracking_uri: str, spool_dir: str, timeout_s: float) -> dict[str, int]:
    """Replay every spooled run, waiting up to ``timeout_s`` for MLflow to come back; returns what is left."""
    left: dict[str, int] = {}

    def replayed() -> bool:
        left.clear()
        left.update({run: n for run, n in sync_spools(tracking_uri, spool_dir, finish_sweep).items() if n})
        return not left

    poll(replayed, timeout_s)
    return left


def main() -> None:
    limit_arenas(DRIVER_ARENAS)  # before Ray starts the driver's threads
    # Ray Tune's classic progress table (budget, epoch, val/acc_mean, acc_mean, params_ratio per trial).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from orchestrator.cli import run_hydra, sigterm_as_ctrl_c

    sigterm_as_ctrl_c()
    use_fail_fast_http()
    run_hydra(reported(functools.partial(run_sweep,
                                         command=shlex.join(["python", "-m", "orchestrator.sweep", *sys.argv[1:]]))))


if __name__ == "__main__":
    main()
