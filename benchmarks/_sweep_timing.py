"""Timing whole sweeps: run ``python -m orchestrator.sweep`` as a user does, read when each trial ran from MLflow,
and train the same trials in a plain loop of ``bap.train`` to compare against.

Shared by ``benchmarks/orchestration.py`` (one machine, local Ray) and ``benchmarks/node_packing.py`` (Ray nodes on
one host).
Clocks: the driver's start and end are taken here with ``time.time()``; a trial's span is its MLflow child run,
from ``create_run`` (in the trial's worker, after the worker started and imported everything) to
``set_terminated`` (after its last MLflow write). Both are wall clocks of this one machine.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import psutil
import torch

import bap
from bap.engine.cpu_memory import retain_freed_memory
from benchmarks._common import REPO_ROOT
from orchestrator.cli import rewrite_sweep_args
from orchestrator.config import SweepConfig, plan_sweep, trial_config, trial_name
from orchestrator.config_store import compose_sweep_config
from orchestrator.tracking import SWEEP_TAG, TRIAL_NAME_TAG, child_runs, client_for
from localstack import Process, base_env

# The sweep axis: one trial per budget, everything else fixed (sharing jaccard, seed 0).
BUDGETS = (1.0, 0.75, 0.5, 0.25, 0.9, 0.6, 0.4, 0.3)


@dataclass(frozen=True)
class TrialSize:
    """How big one trial is: the smoke preset's model and data, shrunk or grown to a target training time."""

    width: float
    epochs: int
    steps_per_epoch: int
    batch_size: int
    train_per_class: int
    val_per_class: int

    def overrides(self) -> list[str]:
        # Random init: pretraining the backbone is a one-off cost of the first sweep, not of a trial.
        return ["model.weights=null", f"model.width={self.width}", f"train.epochs={self.epochs}",
                f"train.steps_per_epoch={self.steps_per_epoch}", f"train.batch_size={self.batch_size}",
                "train.eval_batch_size=128", "train.device=cpu", f"data.train_per_class={self.train_per_class}",
                f"data.val_per_class={self.val_per_class}"]


def sweep_overrides(size: TrialSize, trials: int, experiment: str, concurrency: int) -> list[str]:
    """The command line of one sweep of ``trials`` budgets, one CPU (hence one torch thread) per trial."""
    if not 1 <= trials <= len(BUDGETS):
        raise ValueError(f"trials={trials} must be between 1 and {len(BUDGETS)} (one budget per trial)")
    budgets = ",".join(f"{b:g}" for b in BUDGETS[:trials])
    return [f"experiment={experiment}", f"budgets={budgets}", *size.overrides(), "ray.cpus_per_trial=1",
            f"ray.max_concurrent_trials={concurrency}"]


def compose(overrides: Sequence[str]) -> SweepConfig:
    """The ``SweepConfig`` the sweep's command line gives, composed in this process for the plain loop."""
    return compose_sweep_config(rewrite_sweep_args(list(overrides)))


# ---- the plain loop ----------------------------------------------------------------------------------------------
def loop_train_times(cfg: SweepConfig, threads: int, share: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """Trial name -> seconds of ``bap.train`` for every trial of ``cfg``, one after another in this process with
    ``threads`` torch threads: what a user without an orchestrator would run. ``share`` = (i, n): only every n-th
    trial from the i-th, this process's part when n plain processes split the trials."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    retain_freed_memory()  # as a trial's worker does
    try:
        times = {}
        first, step = share
        for params in plan_sweep(cfg).trials[first::step]:
            start = time.perf_counter()
            bap.train(trial_config(cfg, params))
            times[trial_name(params)] = time.perf_counter() - start
        return times
    finally:
        torch.set_num_threads(saved)


def warm_up(cfg: SweepConfig) -> None:
    """One short untimed training run, so the loop's first trial does not pay this process's one-off costs
    (lazy imports, the embedded data's first build); a sweep's fresh trial processes do pay them."""
    params = plan_sweep(cfg).trials[0]
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, steps_per_epoch=1))
    bap.train(trial_config(short, params))


# A plain process training its share of the trials with one thread: what a user without an orchestrator starts n
# of, side by side, on n cores.
PLAIN_PROCESS = """
import json, sys
from benchmarks._sweep_timing import compose, loop_train_times
loop_train_times(compose(json.loads(sys.argv[1])), threads=1, share=(int(sys.argv[2]), int(sys.argv[3])))
"""


def plain_processes_wall(overrides: Sequence[str], processes: int, timeout_s: float = 1800.0) -> float:
    """Seconds from starting ``processes`` plain Python processes, each training its share of the sweep's trials
    with one thread, until the last exits (their start-up, imports and data building included, as a sweep's)."""
    env = {**base_env(), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-c", PLAIN_PROCESS, json.dumps(list(overrides)), str(i),
                                 str(processes)], env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for i in range(processes)]
    for process in running:
        _, err = process.communicate(timeout=timeout_s)
        if process.returncode != 0:
            raise RuntimeError(f"a plain training process failed:\n{err[-3000:]}")
    return time.perf_counter() - start


# ---- the sweep ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialSpan:
    name: str
    start: float  # epoch seconds: the trial's MLflow run was created
    end: float  # epoch seconds: the trial's MLflow run was terminated

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SweepTiming:
    started: float  # epoch seconds: the driver process was started
    parent_created: float  # the sweep's MLflow parent run was created (imports, Hydra, validation done)
    ended: float  # the driver process exited
    spans: tuple[TrialSpan, ...]
    driver_peak_rss: int = 0  # bytes: the driver process's largest resident set, sampled every SAMPLE_EVERY_S
    driver_peak_rss_trials: int = 0  # bytes: the same, until the last trial's run ended (the closing left out)
    driver_cpu_trials_s: float = 0.0  # the driver's CPU seconds from the first trial's run to the last one's end
    driver_log: str = ""

    @property
    def wall_s(self) -> float:
        return self.ended - self.started

    @property
    def driver_start_s(self) -> float:
        """Python imports, Hydra, validation, the parent MLflow run."""
        return self.parent_created - self.started

    @property
    def ray_start_s(self) -> float:
        """Ray start (or connection), the Tuner, and the first trial's worker up to its MLflow run."""
        return min(s.start for s in self.spans) - self.parent_created

    @property
    def tail_s(self) -> float:
        """After the last trial: the Pareto front and plots, closing the parent run, Ray shutdown."""
        return self.ended - max(s.end for s in self.spans)

    @property
    def once_per_sweep_s(self) -> float:
        return self.driver_start_s + self.ray_start_s + self.tail_s


def run_sweep_process(overrides: Sequence[str], workdir: Path, env: Optional[Mapping[str, str]] = None,
                      timeout_s: float = 1800.0) -> SweepTiming:
    """``python -m orchestrator.sweep OVERRIDES`` in ``workdir``, with MLflow in a SQLite file there unless ``env``
    names a tracking URI (and Ray local unless it names ``RAY_ADDRESS``). The driver runs in its own session;
    whatever of it is left afterwards (a local Ray) is killed by that session's process ids."""
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {**base_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
                "BAP_CACHE_DIR": str(workdir / "cache"), **(env or {})}
    tracking_uri = full_env["MLFLOW_TRACKING_URI"]
    experiment = _experiment(overrides)
    started = time.time()
    driver = Process("sweep", [sys.executable, "-m", "orchestrator.sweep", *overrides], full_env, workdir,
                     workdir / "logs")
    usage = DriverSamples(driver.popen.pid)
    try:
        code = driver.wait(timeout=timeout_s)
        ended = time.time()
    finally:
        usage.stop()
        driver.kill()
    if code != 0:
        raise RuntimeError(f"the sweep exited with {code}:\n{driver.tail(40)}")
    parent_created, spans = read_spans(tracking_uri, experiment)
    first_trial_start = min((span.start for span in spans), default=started)
    last_trial_end = max((span.end for span in spans), default=ended)
    return SweepTiming(started, parent_created, ended, spans, usage.peak, usage.peak_until(last_trial_end),
                       usage.cpu_between(first_trial_start, last_trial_end), driver.log())


SAMPLE_EVERY_S = 0.5


class DriverSamples:
    """The resident set size and CPU time of process ``pid`` while it runs, sampled every ``SAMPLE_EVERY_S`` in a
    thread (the driver's own: Ray's processes that it starts are not counted): its peak memory, overall or up to a
    moment, and the CPU it used between two moments."""

    def __init__(self, pid: int) -> None:
        self.samples: list[tuple[float, int, float]] = []  # (epoch seconds, RSS bytes, CPU seconds so far)
        self._process = psutil.Process(pid)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @property
    def peak(self) -> int:
        return max((rss for _, rss, _ in self.samples), default=0)

    def peak_until(self, moment: float) -> int:
        return max((rss for at, rss, _ in self.samples if at <= moment), default=0)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds from the last sample at or before ``start`` to the last at or before ``end``."""
        def cpu_at(moment: float) -> float:
            return max((cpu for at, _, cpu in self.samples if at <= moment), default=0.0)
        return cpu_at(end) - cpu_at(start)

    def _sample(self) -> None:
        while not self._stopped.is_set():
            try:
                with self._process.oneshot():
                    times = self._process.cpu_times()
                    self.samples.append((time.time(), self._process.memory_info().rss, times.user + times.system))
            except psutil.Error:  # exited
                return
            self._stopped.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def _experiment(overrides: Sequence[str]) -> str:
    for arg in overrides:
        if arg.startswith("experiment="):
            return arg.split("=", 1)[1]
    raise ValueError("the sweep's overrides name no experiment=...; give each timed sweep its own experiment")


def read_spans(tracking_uri: str, experiment: str) -> tuple[float, tuple[TrialSpan, ...]]:
    """(parent run created, every finished trial's span) of the one sweep recorded in ``experiment``."""
    client = client_for(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    spans = tuple(TrialSpan(r.data.tags[TRIAL_NAME_TAG], r.info.start_time / 1e3, r.info.end_time / 1e3)
                  for r in child_runs(client, experiment_id, parent.info.run_id) if r.info.status == "FINISHED")
    return parent.info.start_time / 1e3, spans


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A short directory under /tmp (Ray's socket paths must stay under 107 characters)."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp")


# ---- arithmetic (pure) -------------------------------------------------------------------------------------------
def sweep_efficiency(train_s: Sequence[float], wall_s: float, cores: int) -> float:
    """The trials' training time in the plain loop over the core-seconds the sweep held: 1.0 means the sweep
    spent its cores on training alone, with no start-up, no scheduling gaps, no recording and no idle core."""
    if wall_s <= 0 or cores < 1:
        raise ValueError(f"wall_s={wall_s} must be > 0 and cores={cores} >= 1")
    return sum(train_s) / (wall_s * cores)


def per_trial_overhead(wall_s: float, once_per_sweep_s: float, train_s: Sequence[float], concurrency: int) -> float:
    """Core-seconds per trial the sweep spent on anything but training, once-per-sweep costs left out:
    ``(concurrency x (wall - once) - sum(train)) / trials``. Exact for one trial at a time; with several at once
    it also holds slots left idle in the last wave and the slowdown of trials sharing the machine."""
    if not train_s:
        raise ValueError("train_s is empty; time at least one trial")
    return (concurrency * (wall_s - once_per_sweep_s) - sum(train_s)) / len(train_s)


def slot_gaps(spans: Sequence[TrialSpan], concurrency: int) -> list[float]:
    """Seconds from a trial's end to the start of the trial that took its place: every trial after the first
    ``concurrency`` waited for the most recent end before it (worker start-up and scheduling)."""
    ordered = sorted(spans, key=lambda s: s.start)
    gaps = []
    for index, span in enumerate(ordered[concurrency:], start=concurrency):
        ends = [s.end for s in ordered[:index] if s.end <= span.start]
        if ends:
            gaps.append(span.start - max(ends))
    return gaps


def in_trial_overheads(spans: Sequence[TrialSpan], train_s: Mapping[str, float]) -> list[float]:
    """Per trial: its MLflow run's duration minus its training time in the plain loop (checkpoints, Tune
    reports, MLflow writes, and building the data in a worker's first trial)."""
    return [s.duration - train_s[s.name] for s in spans]


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None
