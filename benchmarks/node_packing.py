"""Packing one host's cores into 1, 2 or 3 Ray worker nodes: trials per hour for each, and a model of sweep wall
time fitted to them that predicts the ``vd_resnet26`` preset on 100 GPU nodes.

The cluster is the compose stack run as local processes (``localstack/``): a Ray head with no CPUs,
an MLflow tracking server, token authentication; the sweep is submitted from this host with ``RAY_ADDRESS``, as
``docs/cluster.md`` describes. The worker nodes share this machine's cores: 1 node gets all of them, 2 nodes one
each on 2 cores, and 3 nodes cannot split 2 cores into whole CPUs, so each gets 1 and the machine is
oversubscribed 1.5x (Ray's ``--num-cpus`` takes whole numbers). On one machine more nodes cannot add compute:
what this measures is what splitting the same cores into more nodes costs, and the per-trial overhead the model
needs.

Model: ``wall = once + ceil(trials / slots) * (trial * max(1, slots / cores) + overhead)``, with ``trial`` the
training time of one trial on one core (plain loop, measured), ``max(1, slots / cores)`` the slowdown when slots
outnumber cores, ``once`` what each sweep spends outside its trials (measured from its timestamps: driver start
to the first trial's MLflow run, the last run's end to driver exit) and ``overhead`` fitted by least squares.
``--quick`` measures 2 nodes only (each sweep costs about 20 s of start-up on 2 cores, three do not fit in 60 s).

    python -m benchmarks.node_packing [--quick] [--repeats N] [--gpu-images-per-s X]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bap.data.decathlon import DOMAINS as DECATHLON_DOMAINS
from benchmarks._common import (add_common_args, describe_machine, machine_info, markdown_table, print_result,
                                write_section)
from benchmarks._sweep_timing import (SweepTiming, TrialSize, compose, loop_train_times, run_sweep_process,
                                      scratch_dir, sweep_overrides, warm_up)
from orchestrator.config import plan_sweep
from localstack import Process, Stack, load_compose, wait_until

# Full: 6 trials = 3 waves on 2 slots, 2 waves on 3 slots; about 15 s of training per trial on one core.
SETTINGS = {
    "full": dict(size=TrialSize(width=0.25, epochs=4, steps_per_epoch=15, batch_size=32, train_per_class=60,
                                val_per_class=30), trials=6, repeats=3, node_counts=(1, 2, 3)),
    "quick": dict(size=TrialSize(width=0.125, epochs=2, steps_per_epoch=2, batch_size=8, train_per_class=8,
                                 val_per_class=4), trials=2, repeats=1, node_counts=(2,)),
}
# The per-trial GPU time of the prediction is an assumption, not a measurement (no GPU here): ResNet-26 at
# 64x64 with AMP, one batch of 32 per domain per step, frozen convs. Pass a measured one with --gpu-images-per-s.
ASSUMED_GPU_IMAGES_PER_S = 3000.0
PREDICTED_NODES = 100


# ---- the cluster -------------------------------------------------------------------------------------------------
class NodeStack(Stack):
    """The compose stack with no worker at start; worker nodes of a chosen CPU count are added and removed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, workers=0)

    def add_nodes(self, count: int, cpus: int) -> list[Process]:
        # The worker service's CPU count comes from RAY_WORKER_CPUS in the compose file.
        self.compose = load_compose({**self.compose_env, "RAY_WORKER_CPUS": str(cpus)})
        nodes = [self.add_worker(wait=False) for _ in range(count)]
        for node in nodes:
            wait_until(lambda: "Ray runtime started" in node.log(), 120, f"{node.name} to start", processes=(node,))
        return nodes

    def remove_nodes(self, nodes: Sequence[Process]) -> None:
        for node in nodes:
            node.stop(grace_s=30)
            self.workers.remove(node)


def node_cpus(nodes: int, cores: int) -> int:
    """Each node's share of the cores, at least one whole CPU (so 3 nodes on 2 cores oversubscribe)."""
    return max(1, cores // nodes)


# ---- the model (pure) --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPoint:
    trials: int
    slots: int  # trials Ray runs at once: the cluster's CPUs at one CPU per trial
    cores: int  # physical cores the slots share
    trial_s: float  # training time of one trial on one core (plain loop)
    wall_s: float  # measured wall time of the whole sweep
    once_s: float  # measured: the part of wall_s before the first trial's run and after the last one's end

    @property
    def waves(self) -> int:
        return math.ceil(self.trials / self.slots)

    @property
    def contended_trial_s(self) -> float:
        """A trial's training time when the slots outnumber the cores and share them."""
        return self.trial_s * max(1.0, self.slots / self.cores)


@dataclass(frozen=True)
class SweepModel:
    once_s: float  # start-up and tail, once per sweep
    overhead_s: float  # per trial, on top of its training time

    def wall_s(self, trials: int, slots: int, trial_s: float) -> float:
        return self.once_s + math.ceil(trials / slots) * (trial_s + self.overhead_s)


def fit_sweep_model(points: Sequence[SweepPoint]) -> SweepModel:
    """``once``: the median of the sweeps' measured once-per-sweep time. ``overhead``: least squares through the
    origin of ``wall - once - waves * contended_trial`` against ``waves`` (one number per wave of trials: worker
    start, recording, Tune; the first wave's worker start is already in ``once``)."""
    if not points:
        raise ValueError("no sweeps to fit; measure at least one")
    waves = [p.waves for p in points]
    rest = [p.wall_s - p.once_s - p.waves * p.contended_trial_s for p in points]
    overhead = sum(w * r for w, r in zip(waves, rest)) / sum(w * w for w in waves)
    return SweepModel(once_s=statistics.median(p.once_s for p in points), overhead_s=overhead)


@dataclass(frozen=True)
class GpuTrial:
    """One trial of a GPU preset: its training steps and images from the config, its speed assumed."""

    steps: int  # epochs x steps per epoch
    images_per_step: int  # one batch per domain per step (the accumulate schedule)
    images_per_s: float  # ASSUMED throughput of one GPU

    @property
    def train_s(self) -> float:
        return self.steps * self.images_per_step / self.images_per_s


def predict(model: SweepModel, trials: int, nodes: int, trial_s: float) -> dict:
    """Wall time and GPU-hours of ``trials`` one-GPU trials on ``nodes`` one-GPU nodes; a GPU is held for a
    trial's overhead as well as its training."""
    wall_s = model.wall_s(trials, nodes, trial_s)
    return {"trials": trials, "nodes": nodes, "waves": math.ceil(trials / nodes), "wall (h)": wall_s / 3600,
            "GPU-hours": trials * (trial_s + model.overhead_s) / 3600}


def trials_per_hour(trials: int, wall_s: float) -> float:
    return 3600.0 * trials / wall_s


# ---- measurement -------------------------------------------------------------------------------------------------
def measure(size: TrialSize, trials: int, node_counts: Sequence[int], repeats: int, cores: int,
            root: Path) -> tuple[list[dict], list[float]]:
    """Per repetition: the plain 1-thread loop's trial time, then one sweep per node count (a fresh set of worker
    nodes each). Returns one row per sweep and the loop's per-trial times."""
    loop_cfg = compose(sweep_overrides(size, trials, "loop", 1))
    warm_up(loop_cfg)
    rows, trial_times = [], []
    stack = NodeStack(root / "stack")
    try:
        stack.start()
        for rep in range(repeats):
            trial_times += loop_train_times(loop_cfg, threads=1).values()
            shift = rep % len(node_counts)
            order = [*node_counts[shift:], *node_counts[:shift]]
            for nodes in order:
                cpus = node_cpus(nodes, cores)
                workers = stack.add_nodes(nodes, cpus)
                try:
                    overrides = sweep_overrides(size, trials, f"packing_n{nodes}_r{rep}", nodes * cpus)
                    timing = run_sweep_process(overrides, root / f"n{nodes}_r{rep}", env=stack.driver_env())
                finally:
                    stack.remove_nodes(workers)
                rows.append(sweep_row(rep, nodes, cpus, trials, timing))
                print(rows[-1], flush=True)
    finally:
        stack.stop()
    return rows, trial_times


def sweep_row(rep: int, nodes: int, cpus: int, trials: int, timing: SweepTiming) -> dict:
    if len(timing.spans) != trials:
        raise RuntimeError(f"{nodes} node(s): {len(timing.spans)} of {trials} trials finished")
    return {"repetition": rep, "nodes": nodes, "cpus_per_node": cpus, "slots": nodes * cpus, "trials": trials,
            "wall_s": timing.wall_s, "once_s": timing.once_per_sweep_s}


def summary_rows(rows: list[dict], cores: int, model: SweepModel, trial_s: float) -> list[dict]:
    out = []
    for nodes in sorted({r["nodes"] for r in rows}):
        mine = [r for r in rows if r["nodes"] == nodes]
        first = mine[0]
        wall = statistics.median(r["wall_s"] for r in mine)
        point = SweepPoint(first["trials"], first["slots"], cores, trial_s, wall, first["once_s"])
        out.append({"worker nodes": nodes, "CPUs per node": first["cpus_per_node"], "trial slots": first["slots"],
                    "slots / cores": first["slots"] / cores, "waves": point.waves, "wall (s)": wall,
                    "trials per hour": trials_per_hour(first["trials"], wall),
                    "model wall (s)": model.wall_s(point.trials, point.slots, point.contended_trial_s)})
    return out


def node_scaling(rows: list[dict], nodes: int) -> float | None:
    """Trials per hour with ``nodes`` nodes over those with 1, median of the ratios within each repetition;
    None unless both were measured."""
    walls = {(r["repetition"], r["nodes"]): r["wall_s"] for r in rows}
    ratios = [walls[(rep, 1)] / walls[(rep, n)] for rep, n in walls if n == nodes and (rep, 1) in walls]
    return statistics.median(ratios) if ratios else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--repeats", type=int, default=None, help="repetitions of every node count "
                                                                   "(default: 3, quick 1)")
    parser.add_argument("--gpu-images-per-s", type=float, default=ASSUMED_GPU_IMAGES_PER_S,
                        help="training images per second of one GPU on the vd_resnet26 preset (an assumption "
                             f"unless you measured it; default {ASSUMED_GPU_IMAGES_PER_S:g})")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = SETTINGS["quick" if args.quick else "full"]["repeats"]
    if args.repeats < 1 or args.gpu_images_per_s <= 0:
        parser.error(f"--repeats={args.repeats} must be >= 1 and --gpu-images-per-s={args.gpu_images_per_s} > 0")
    return args


def main() -> None:
    args = parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    size, trials = settings["size"], settings["trials"]
    repeats = args.repeats
    cores = len(os.sched_getaffinity(0))
    info = machine_info()
    start = time.perf_counter()

    with scratch_dir("bap-pack-") as root:
        rows, trial_times = measure(size, trials, settings["node_counts"], repeats, cores, Path(root))
    trial_s = statistics.median(trial_times)
    points = [SweepPoint(r["trials"], r["slots"], cores, trial_s, r["wall_s"], r["once_s"]) for r in rows]
    model = fit_sweep_model(points)
    summary = summary_rows(rows, cores, model, trial_s)
    measured = markdown_table(summary,
                              ["worker nodes", "CPUs per node", "trial slots", "slots / cores", "waves", "wall (s)",
                               "trials per hour", "model wall (s)"],
                              {"slots / cores": ".2f", "wall (s)": ".1f", "trials per hour": ".0f",
                               "model wall (s)": ".1f"})

    preset = compose(["preset=vd_resnet26"])
    gpu = GpuTrial(steps=preset.train.epochs * preset.train.steps_per_epoch,
                   images_per_step=preset.train.batch_size * len(DECATHLON_DOMAINS),
                   images_per_s=args.gpu_images_per_s)
    per_wave = PREDICTED_NODES // len(plan_sweep(preset).trials)
    predictions = []
    for seeds in sorted({1, per_wave, per_wave + 1}):
        preset_trials = len(plan_sweep(compose(["preset=vd_resnet26", f"seeds=range(0,{seeds})"])).trials)
        predictions.append({"seeds": seeds, **predict(model, preset_trials, PREDICTED_NODES, gpu.train_s)})
    predicted = markdown_table(predictions, ["seeds", "trials", "nodes", "waves", "GPU-hours", "wall (h)"],
                               {"GPU-hours": ".1f", "wall (h)": ".2f"})
    scaling = node_scaling(rows, 2)
    scaling_text = ("" if scaling is None else f" Trials per hour with 2 nodes / with 1 node, within each "
                    f"repetition: {scaling:.2f} (the same cores; 1.00 = splitting them into nodes costs nothing).")
    print(measured, predicted, sep="\n\n")
    print(f"fitted: once per sweep {model.once_s:.1f} s, per trial {model.overhead_s:.2f} s; trial on one core "
          f"{trial_s:.1f} s; assumed GPU trial {gpu.train_s:.0f} s; took {time.perf_counter() - start:.0f} s")

    body = f"""## Packing one host into Ray nodes (`benchmarks/node_packing.py{' --quick' if args.quick else ''}`)

{describe_machine(info)}
- Cluster: the compose services as local processes (`localstack/`): Ray head (no CPUs, dashboard),
  MLflow tracking server (SQLite behind it), token auth; N worker nodes started for each measurement and stopped
  after it. The sweep is `python -m orchestrator.sweep` submitted from this host with `RAY_ADDRESS`.
- **{cores} cores only.** 1 node gets {node_cpus(1, cores)} CPUs, 2 nodes {node_cpus(2, cores)} each, 3 nodes
  {node_cpus(3, cores)} each: Ray's `--num-cpus` is a whole number, so 3 nodes oversubscribe the cores 1.5x and
  their trials share them. More nodes on one machine add processes, not compute; this shows what splitting the
  same cores into nodes costs and gives the model its per-trial overhead, not speed-up from hardware.
- Each sweep: {trials} trials (one per budget), ResNet-26 width {size.width:g}, random init, embedded data,
  {size.epochs} epochs x {size.steps_per_epoch} steps, one CPU (one torch thread) per trial. Training time of one
  trial on one core, from a plain `bap.train` loop in this process: {trial_s:.1f} s (median of
  {len(trial_times)} trials).
- Repeated {repeats} time(s): every node count once per repetition, the order rotating; walls are medians over
  repetitions. Trials per hour = trials / whole-sweep wall time (start-up and tail included).

{measured}

Model: `wall = once + ceil(trials / slots) x (trial x max(1, slots / cores) + overhead)`. once =
{model.once_s:.1f} s per sweep (median of the sweeps' measured driver start to first trial's MLflow run plus last
run's end to driver exit); overhead = {model.overhead_s:.2f} s per wave of trials (least squares through the origin
over {len(points)} sweeps of wall - once - waves x contended trial time against waves: handing a worker its trial,
checkpoints, Tune reports, MLflow writes over HTTP). Both measured here, on CPU trials.{scaling_text}

Prediction for `preset=vd_resnet26` ({len(preset.budgets)} budgets x {len(preset.methods)} methods x seeds, one GPU a
trial) on
{PREDICTED_NODES} one-GPU nodes. **Per-trial GPU time is an assumption, not a measurement** (no GPU here):
{preset.train.epochs} epochs x {preset.train.steps_per_epoch} steps (`trainer=long`) x {gpu.images_per_step} images
per step ({preset.train.batch_size} per domain x {len(DECATHLON_DOMAINS)} Decathlon domains, METHOD 3 and 7) =
{gpu.steps * gpu.images_per_step:,} training images at an assumed {gpu.images_per_s:,.0f} images/s per GPU
(ResNet-26 at 64x64, AMP) = {gpu.train_s / 60:.0f} min per trial; validation, data loading stalls and CUDA start-up
are not counted. once and overhead are the CPU values measured above (a GPU worker adds CUDA start-up).

{predicted}
"""
    write_section(args, "node_packing", body)
    print_result("trials_per_hour_2_nodes", next(r["trials per hour"] for r in summary if r["worker nodes"] == 2))


if __name__ == "__main__":
    main()
