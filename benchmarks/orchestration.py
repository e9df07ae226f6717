"""What the orchestrator costs: the same trials as a Ray Tune sweep and as a plain loop of ``bap.train``.

Every repetition runs, in an order that rotates from one repetition to the next:

1. a plain loop of ``bap.train`` over the trials in this process with one torch thread: each trial's training
   time, the compute a sweep's trial does (Ray gives a one-CPU trial one thread, ``OMP_NUM_THREADS=1``);
2. the same loop with one torch thread per core: what a user without an orchestrator runs on this machine;
3. one plain Python process per core, side by side, each training its share of the trials with one thread:
   the fair baseline for a sweep running that many trials at once (process start-up, imports and data included);
4. ``python -m orchestrator.sweep`` on a local Ray, one trial per core at once, one CPU each;
5. (full run) the same sweep one trial at a time, which isolates the per-trial overhead from contention;

all with the same trial configs and seeds (the sweep's own command line, composed here for the loops). It also
times parts of the overhead alone: the checkpoint and MLflow writes of one trial recorded the way the sweep
records it (``orchestrator.trainable.record_trial``, timing ``CheckpointHook.after_epoch``, ``bap.save`` and every
call on the trial's ``Recorder``), and what a new worker process does first (importing the trainable, building the
data; once per worker, since trials reuse workers) in a fresh interpreter.
Targets: per-trial overhead <= 10% of a 30 s trial; 2 trials at once on 2 cores in <= 0.6x the loop's time; end
to end (start-up and shut-down included) <= 10% over the plain processes side by side.

    python -m benchmarks.orchestration [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import bap
from bap.engine.hooks import CheckpointHook
from benchmarks._common import (add_common_args, describe_machine, machine_info, markdown_table, print_result,
                                run_json_process, write_section)
from benchmarks._sweep_timing import (SweepTiming, TrialSize, compose, in_trial_overheads, loop_train_times, median,
                                      per_trial_overhead, plain_processes_wall, run_sweep_process, scratch_dir,
                                      slot_gaps, sweep_efficiency, sweep_overrides, warm_up)
from orchestrator.config import SweepConfig, plan_sweep, trial_config
from orchestrator.spool import Recorder
from orchestrator.tracking import client_for, ensure_experiment
from orchestrator.trainable import record_trial
from localstack import Stack, base_env

# Full: about 30 s of training per trial on one core (the setting), four trials = two waves on 2 cores.
# Quick: a few seconds per trial, two trials, and no one-at-a-time sweep, to stay under a minute.
SIZES = {
    "full": TrialSize(width=0.25, epochs=4, steps_per_epoch=38, batch_size=32, train_per_class=60, val_per_class=30),
    "quick": TrialSize(width=0.125, epochs=2, steps_per_epoch=3, batch_size=8, train_per_class=8, val_per_class=4),
}
OVERHEAD_TARGET = 0.10  # per-trial overhead / trial training time; also the end-to-end target
SPEED_TARGET = 0.6  # sweep wall time / loop wall time


@dataclass
class Repetition:
    loop_one_thread: dict[str, float] = field(default_factory=dict)  # trial -> training seconds
    loop_all_threads_s: float = 0.0
    plain_processes_s: float = 0.0  # the trials split over one plain 1-thread process per core, side by side
    sweeps: dict[int, SweepTiming] = field(default_factory=dict)  # trials at once -> timing
    costs: dict[str, float] = field(default_factory=dict)  # COST_PARTS -> seconds per trial, timed on their own


# ---- measurements ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def timed(owner: Any, attribute: str, totals: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of every call of ``owner.attribute`` to ``totals[key]`` while the block runs."""
    original = getattr(owner, attribute)
    setattr(owner, attribute, _adding_time(original, totals, key))
    try:
        yield
    finally:
        setattr(owner, attribute, original)


class TimedCalls:
    """``target`` with the wall time of every method call made on it from outside added to ``totals[key]``; its
    calls to its own methods happen inside those and are not counted twice."""

    def __init__(self, target: Any, totals: dict[str, float], key: str) -> None:
        self._target, self._totals, self._key = target, totals, key

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        return _adding_time(value, self._totals, self._key) if callable(value) else value


def _adding_time(fn: Callable, totals: dict[str, float], key: str) -> Callable:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    return call


def recording_costs(cfg: SweepConfig, workdir: Path) -> dict[str, float]:
    """Seconds one trial spends writing checkpoints and MLflow records (params, per-epoch and final metrics,
    config, per-domain table, the pruned model), recorded as the sweep's trials are, into SQLite, one thread.

    One step per epoch: both costs scale with epochs and model size, not with steps."""
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps_per_epoch=1))
    params = plan_sweep(short).trials[0]
    client = client_for(f"sqlite:///{workdir / 'record.db'}")
    run_id = client.create_run(ensure_experiment(client, "record")).info.run_id
    recorder = Recorder(client, run_id, str(workdir / "spool"))
    totals = {"checkpoint": 0.0, "mlflow": 0.0}
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with timed(CheckpointHook, "after_epoch", totals, "checkpoint"), timed(bap, "save", totals, "mlflow"):
            record_trial(trial_config(short, params), params, TimedCalls(recorder, totals, "mlflow"),
                         checkpoint_dir=str(workdir / "checkpoint"))
    finally:
        torch.set_num_threads(saved)
    return totals


# What a trial's new Ray worker process does before training, in a fresh interpreter with one thread: import the
# trainable (torch, torchvision, bap, Ray Tune, MLflow), then build the embedded data (the loop builds it once and
# reuses it from cache; every sweep trial builds it again).
FRESH_PROCESS = """
import json, sys, time
start = time.perf_counter()
import orchestrator.trainable
imported = time.perf_counter()
from bap.config import DataConfig
from bap.data import build_domains
build_domains(DataConfig(**json.loads(sys.argv[1])))
print(json.dumps({"import": imported - start, "data": time.perf_counter() - imported}))
"""


def fresh_process_costs(cfg: SweepConfig) -> dict[str, float]:
    """Seconds a new worker process spends importing the trainable ("import") and building the data ("data")."""
    env = {**base_env(), "OMP_NUM_THREADS": "1"}
    return run_json_process([sys.executable, "-c", FRESH_PROCESS, json.dumps(dataclasses.asdict(cfg.data))],
                            "timing a fresh process", env=env, timeout=300)


def run_repetition(index: int, cfg: SweepConfig, overrides: dict[int, list[str]], cores: int,
                   root: Path) -> Repetition:
    """Both loops and every sweep once, in an order that rotates with ``index``, then the parts timed alone."""
    rep = Repetition()

    def loop_one() -> None:
        rep.loop_one_thread = loop_train_times(cfg, threads=1)

    def loop_all() -> None:
        rep.loop_all_threads_s = sum(loop_train_times(cfg, threads=cores).values())

    def plain() -> None:
        rep.plain_processes_s = plain_processes_wall(overrides[cores], cores)

    def sweep(concurrency: int) -> Callable[[], None]:
        def run() -> None:
            rep.sweeps[concurrency] = run_sweep_process(overrides[concurrency], root / f"rep{index}_c{concurrency}")
        return run

    steps = {"loop, 1 thread": loop_one, f"loop, {cores} threads": loop_all, f"plain, {cores} processes": plain}
    steps.update({f"sweep, {c} at once": sweep(c) for c in overrides})
    names = list(steps)
    shift = index % len(names)
    for name in names[shift:] + names[:shift]:
        start = time.perf_counter()
        steps[name]()
        print(f"repetition {index + 1}: {name} took {time.perf_counter() - start:.1f}s", flush=True)
    rep.costs = {**recording_costs(cfg, root / f"rep{index}_record"), **fresh_process_costs(cfg)}
    return rep


# ---- summary -----------------------------------------------------------------------------------------------------
@dataclass
class SweepSummary:
    concurrency: int
    wall_s: float
    vs_loop: float  # wall / the all-threads loop's wall, median of per-repetition ratios
    efficiency: float
    overhead_s: float  # per trial, core-seconds
    driver_start_s: float
    ray_start_s: float
    tail_s: float
    gap_s: float | None
    in_trial_s: float


def summarize_sweep(reps: list[Repetition], concurrency: int) -> SweepSummary:
    timings = [r.sweeps[concurrency] for r in reps]
    per_rep = [(r.sweeps[concurrency], list(r.loop_one_thread.values())) for r in reps]
    return SweepSummary(
        concurrency=concurrency,
        wall_s=statistics.median(t.wall_s for t in timings),
        vs_loop=statistics.median(r.sweeps[concurrency].wall_s / r.loop_all_threads_s for r in reps),
        efficiency=statistics.median(sweep_efficiency(train, t.wall_s, concurrency) for t, train in per_rep),
        overhead_s=statistics.median(per_trial_overhead(t.wall_s, t.once_per_sweep_s, train, concurrency)
                                     for t, train in per_rep),
        driver_start_s=statistics.median(t.driver_start_s for t in timings),
        ray_start_s=statistics.median(t.ray_start_s for t in timings),
        tail_s=statistics.median(t.tail_s for t in timings),
        gap_s=median([g for t in timings for g in slot_gaps(t.spans, concurrency)]),
        in_trial_s=statistics.median(o for r in reps
                                     for o in in_trial_overheads(r.sweeps[concurrency].spans, r.loop_one_thread)),
    )


def run_rows(reps: list[Repetition], sweeps: list[SweepSummary], cores: int) -> list[dict]:
    loop_one = statistics.median(sum(r.loop_one_thread.values()) for r in reps)
    loop_all = statistics.median(r.loop_all_threads_s for r in reps)
    rows = [{"run": "loop, 1 thread", "threads per trial": 1, "trials at once": 1, "wall (s)": loop_one,
             f"wall / loop with {cores} threads": statistics.median(
                 sum(r.loop_one_thread.values()) / r.loop_all_threads_s for r in reps)},
            {"run": f"loop, {cores} threads", "threads per trial": cores, "trials at once": 1, "wall (s)": loop_all,
             f"wall / loop with {cores} threads": 1.0},
            {"run": f"plain, {cores} processes", "threads per trial": 1, "trials at once": cores,
             "wall (s)": statistics.median(r.plain_processes_s for r in reps),
             f"wall / loop with {cores} threads": statistics.median(r.plain_processes_s / r.loop_all_threads_s
                                                                   for r in reps)}]
    for s in sweeps:
        rows.append({"run": f"sweep, {s.concurrency} at once", "threads per trial": 1,
                     "trials at once": s.concurrency, "wall (s)": s.wall_s,
                     f"wall / loop with {cores} threads": s.vs_loop, "sweep_efficiency": s.efficiency})
    return rows


def breakdown_rows(sweeps: list[SweepSummary], train_s: float, costs: dict[str, float]) -> list[dict]:
    def row(part: str, values: list[float | None], how: str) -> dict:
        return {"part": part, **{f"{s.concurrency} at once (s)": v for s, v in zip(sweeps, values)}, "measured": how}

    same = lambda value: [value] * len(sweeps)  # noqa: E731
    return [
        row("training of one trial", same(train_s), "bap.train in the loop, 1 thread"),
        row("once: driver start", [s.driver_start_s for s in sweeps],
            "driver start -> MLflow parent run (imports, Hydra, validation)"),
        row("once: Ray start, first trial", [s.ray_start_s for s in sweeps],
            "parent run -> first trial's MLflow run (Ray, Tuner, worker start)"),
        row("once: after the last trial", [s.tail_s for s in sweeps],
            "last trial's run ends -> driver exits (Pareto front, plots, shutdown)"),
        row("per trial: between trials", [s.gap_s for s in sweeps],
            "a trial's run ends -> the next trial's run starts in its slot (the slot's worker is reused)"),
        row("once per worker: importing the trainable", same(costs["import"]), "fresh interpreter, timed alone"),
        row("per trial: in the trial, beyond training", [s.in_trial_s for s in sweeps],
            "trial's MLflow run duration - its training time in the loop"),
        row("  of which checkpoint writes", same(costs["checkpoint"]), "CheckpointHook, timed alone in-process"),
        row("  of which MLflow writes", same(costs["mlflow"]), "Recorder + model file, timed alone (SQLite)"),
        row("once per worker: building the data", same(costs["data"]), "fresh interpreter, timed alone (cached after)"),
        row("per trial: overhead (core-s)", [s.overhead_s for s in sweeps],
            "(trials at once x (wall - once) - sum of training) / trials"),
    ]


def overhead_verdict(sweep: SweepSummary, train_s: float, costs: dict[str, float]) -> str:
    share = sweep.overhead_s / train_s
    verdict = "met" if share <= OVERHEAD_TARGET else "missed"
    parts = {"the gap between trials (Tune scheduling, handing the worker the next trial)": sweep.gap_s or 0.0,
             "checkpoint writes": costs["checkpoint"], "MLflow writes": costs["mlflow"],
             "the rest of the trial's run (Tune reports and checkpoint copies, contention)":
                 sweep.in_trial_s - costs["checkpoint"] - costs["mlflow"]}
    largest = max(parts, key=parts.get)
    return (f"Per-trial overhead {sweep.overhead_s:.2f} s = {share:.1%} of a {train_s:.1f} s trial "
            f"({sweep.concurrency} at once; target <= {OVERHEAD_TARGET:.0%}): {verdict}; its largest part is "
            f"{largest} ({parts[largest]:.2f} s).")


def end_to_end_verdict(sweep: SweepSummary, reps: list[Repetition], cores: int, train_s: float) -> str:
    """The sweep against the same trials in plain processes side by side, start-up and shut-down included, next
    to the amortised per-trial overhead (once-per-sweep costs left out)."""
    extra = statistics.median(r.sweeps[sweep.concurrency].wall_s / r.plain_processes_s for r in reps) - 1
    verdict = "met" if extra <= OVERHEAD_TARGET else f"missed by {extra - OVERHEAD_TARGET:.1%}"
    once = sweep.driver_start_s + sweep.ray_start_s + sweep.tail_s
    return (f"End to end, {sweep.concurrency} trials at once: the sweep took {extra:+.1%} against {cores} plain "
            f"1-thread processes side by side training the same trials, start-up and shut-down included (target "
            f"<= {OVERHEAD_TARGET:.0%}): {verdict}. Once-per-sweep costs (driver start, Ray start, closing) are "
            f"{once:.1f} s of its {sweep.wall_s:.1f} s; amortised, leaving them out, it adds "
            f"{sweep.overhead_s:.2f} core-s per trial ({sweep.overhead_s / train_s:.1%} of a trial).")


def speed_verdict(sweep: SweepSummary, reps: list[Repetition], cores: int) -> str:
    loop_one = statistics.median(sum(r.loop_one_thread.values()) for r in reps)
    loop_all = statistics.median(r.loop_all_threads_s for r in reps)
    ideal = loop_one / (cores * loop_all)  # perfect packing of one-thread trials, no overhead at all
    verdict = "met" if sweep.vs_loop <= SPEED_TARGET else "missed"
    text = (f"{cores} trials at once take {sweep.vs_loop:.2f}x the {cores}-thread loop's time (target <= "
            f"{SPEED_TARGET}): {verdict}. With no overhead at all the ratio would be {ideal:.2f} (the 1-thread "
            f"loop's time / {cores} / the {cores}-thread loop's time: torch with {cores} threads runs these trials "
            f"{loop_one / loop_all:.2f}x as fast as with 1).")
    if verdict == "missed":
        once = sweep.driver_start_s + sweep.ray_start_s + sweep.tail_s
        text += (f" Once-per-sweep costs are {once:.1f} s of the sweep's {sweep.wall_s:.1f} s; per trial the "
                 f"sweep adds {sweep.overhead_s:.1f} core-s.")
    return text


def server_sweep(overrides: list[str], backend_uri: str, root: Path) -> SweepTiming:
    """The sweep once more, recording into the compose stack's MLflow server over HTTP with ``backend_uri`` (its
    PostgreSQL) behind it, as a lab's sweeps do; Ray local as in the other sweeps."""
    stack = Stack(root, workers=0)
    server = stack.start_mlflow("mlflow", backend_uri)
    try:
        experiment = f"orchestration_http_{uuid.uuid4().hex[:8]}"  # the database outlives this run
        overrides = [f"experiment={experiment}" if a.startswith("experiment=") else a for a in overrides]
        return run_sweep_process(overrides, root / "sweep", env={"MLFLOW_TRACKING_URI": server.url})
    finally:
        stack.stop()


def server_verdict(timing: SweepTiming, reps: list[Repetition], concurrency: int, backend_uri: str) -> str:
    plain = statistics.median(r.plain_processes_s for r in reps)
    local = statistics.median(r.sweeps[concurrency].wall_s for r in reps)
    backend = backend_uri.split(":", 1)[0].split("+", 1)[0]
    return (f"Against the stack's MLflow server over HTTP ({backend} behind it), once, {concurrency} at once: "
            f"{timing.wall_s:.1f} s, {timing.wall_s / plain - 1:+.1%} against the plain processes' median and "
            f"{timing.wall_s / local - 1:+.1%} against the SQLite sweeps' median; driver start "
            f"{timing.driver_start_s:.1f} s, Ray start and first trial {timing.ray_start_s:.1f} s, closing "
            f"{timing.tail_s:.1f} s, trials' runs {statistics.median(s.duration for s in timing.spans):.1f} s "
            f"(median).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--repeats", type=int, default=None, help="repetitions of the whole set (default: 3, quick 1)")
    parser.add_argument("--server-backend", default=None,
                        help="also run the sweep once against the stack's MLflow server over HTTP with this backend "
                             "store behind it, e.g. the PostgreSQL URI that `bash tests/cluster/start_postgres.sh` "
                             "prints")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    size = SIZES["quick" if args.quick else "full"]
    repeats = args.repeats
    trials = 2 if args.quick else 4
    cores = len(os.sched_getaffinity(0))
    concurrencies = [cores] if args.quick else [cores, 1]
    info = machine_info()

    overrides = {c: sweep_overrides(size, trials, f"orchestration_c{c}", c) for c in concurrencies}
    cfg = compose(overrides[cores])  # the trials' configs; the sweeps differ in concurrency only
    warm_up(cfg)
    with scratch_dir("bap-orch-") as root:
        reps = [run_repetition(i, cfg, overrides, cores, Path(root)) for i in range(repeats)]
        server = (server_sweep(overrides[cores], args.server_backend, Path(root) / "server")
                  if args.server_backend else None)

    train_s = statistics.median(t for r in reps for t in r.loop_one_thread.values())
    costs = {k: statistics.median(r.costs[k] for r in reps) for k in reps[0].costs}
    sweeps = [summarize_sweep(reps, c) for c in concurrencies]
    runs = markdown_table(run_rows(reps, sweeps, cores), ["run", "threads per trial", "trials at once", "wall (s)",
                                                          f"wall / loop with {cores} threads", "sweep_efficiency"],
                          {"wall (s)": ".1f", f"wall / loop with {cores} threads": ".2f", "sweep_efficiency": ".2f"})
    columns = ["part", *[f"{s.concurrency} at once (s)" for s in sweeps], "measured"]
    parts = markdown_table(breakdown_rows(sweeps, train_s, costs), columns,
                           {c: ".2f" for c in columns[1:-1]})
    overhead_sweep = sweeps[-1]  # one at a time where it ran: no contention in its per-trial overhead
    verdicts = [overhead_verdict(overhead_sweep, train_s, costs), speed_verdict(sweeps[0], reps, cores),
                end_to_end_verdict(sweeps[0], reps, cores, train_s)]
    if server is not None:
        verdicts.append(server_verdict(server, reps, cores, args.server_backend))
    print(runs, parts, *verdicts, sep="\n\n")

    body = f"""## Orchestration overhead (`benchmarks/orchestration.py{' --quick' if args.quick else ''}`)

{describe_machine(info)}
- {trials} trials (budgets {', '.join(a.split('=')[1] for a in overrides[cores] if a.startswith('budgets='))},
  method {plan_sweep(cfg).trials[0]['method']}, seed {plan_sweep(cfg).trials[0]['seed']}): ResNet-26 width
  {size.width:g}, random init, embedded data ({size.train_per_class} train /
  {size.val_per_class} val images per class), {size.epochs} epochs x {size.steps_per_epoch} steps of
  {size.batch_size} images per domain, CPU. MLflow in a SQLite file, Ray local (`ray.cpus_per_trial=1`: Ray sets
  `OMP_NUM_THREADS=1`, so each trial trains with 1 torch thread).
- The loops call `bap.train` in this process (after one short untimed warm-up run) with 1 thread, and with
  {cores} threads (torch's default here: what a single process uses). The plain processes: {cores} fresh Python
  processes side by side, each training its share of the trials with 1 thread (imports and data included). The
  sweeps run
  `python -m orchestrator.sweep` with the same overrides in a subprocess; wall = process start to exit.
- Repeated {repeats} time(s): each repetition runs both loops and every sweep, in a rotating order; wall times
  and ratios are medians over repetitions (ratios taken within a repetition), per-trial times medians over
  every trial of every repetition.
- `sweep_efficiency` = (sum of the trials' training times in the 1-thread loop) / (sweep wall time x trials at
  once): the share of the core-seconds the sweep held that went into training.

{runs}

Per-trial overhead, by part (medians; "once" parts happen once per sweep):

{parts}

Trials reuse their slot's Ray worker (`reuse_actors`), so importing the trainable and building the data happen
once per worker (its first trial), not per trial. The "of which" and "once per worker" parts are timed alone (in
this process, or in a fresh interpreter for what a new worker does),
not cut out of the sweep; the differences they belong to also carry the spread of a trial's training time
between processes (about a second in 30), so they need not add up.

{chr(10).join(v + chr(10) for v in verdicts)}"""
    write_section(args, "orchestration", body)
    print_result("sweep_efficiency", sweeps[0].efficiency)


if __name__ == "__main__":
    main()
