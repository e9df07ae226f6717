"""Does a search, or Pareto-aware stopping, find the front with fewer trials and fewer trial-epochs than a grid?

Runs the product's own sweeps on the method study's trial settings (``sweeps/preset/study.yaml``: the embedded
data, ResNet-26 at width 0.25, 4 epochs of 25 steps, two trials at a time), one seed per trial so every variant
trains the same trial the same way and only the choice of trials differs:

- ``grid``: methods union, jaccard, consensus, none x budgets 1, 0.75, 0.5, 0.25 (16 trials);
- ``optuna``: ``search=optuna`` over the same losses and budgets in [0.2, 1.0], half the grid's trials, one sweep
  per search seed;
- each again with ``scheduler=pareto`` (its default grace period and margin).

From MLflow, in the order trials ended: the hypervolume of the front (``orchestrator.front.summary_metrics``, the
sweep's own metric) against trials and against trial-epochs (the epochs each trial trained, stopped ones
included). Targets: optuna reaches the grid's final hypervolume within 1% with at most half the grid's trials;
``scheduler=pareto`` saves at least 30% of trial-epochs with at most 2% hypervolume lost.

    python -m benchmarks.search_efficiency     # about 35 min on 2 cores; finished sweeps are reused on a rerun
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from bap import metrics as M
from benchmarks._common import (REPO_ROOT, add_common_args, describe_machine, machine_info,
                                markdown_table, print_result, write_section)
from orchestrator.front import run_record, summary_metrics
from orchestrator.table import ParetoTable
from orchestrator.tracking import STOPPED_TAG, SWEEP_TAG, child_runs, client_for

LOSSES = "[union,jaccard,consensus,none]"
STUDY = ["preset=study", f"methods={LOSSES}", "seeds=[0]"]
GRID = [*STUDY, "budgets=[1.0,0.75,0.5,0.25]"]
GRID_TRIALS = 16
OPTUNA = [*STUDY, "search=optuna", f"search.num_samples={GRID_TRIALS // 2}", "search.budget=[0.2,1.0]"]
# The searches compared: TPE as configured by default (its first 10 trials random: all 8 here), and TPE modelling
# the front after 4 random trials.
SEARCHES = {"optuna": OPTUNA, "optuna4": [*OPTUNA, "search.startup_trials=4"]}
PARETO = ["scheduler=pareto"]
QUICK = ["model.weights=null", "model.width=0.125", "data.train_per_class=8", "data.val_per_class=4",
         "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=8", "methods=[union,none]",
         "budgets=[1.0,0.5]", "search.num_samples=2"]
GROUP = M.hypervolume_key("resnet26/all")
HV_TOLERANCE, EPOCH_SAVING, HV_LOSS = 0.01, 0.30, 0.02
PLOT = "docs/search_efficiency.png"


def variants(search_seeds: Sequence[int]) -> dict[str, list[str]]:
    """Variant name -> its sweep's overrides."""
    out = {"grid": GRID, "grid+pareto": [*GRID, *PARETO]}
    for search, overrides in SEARCHES.items():
        for seed in search_seeds:
            out[f"{search} s{seed}"] = [*overrides, f"search.seed={seed}"]
            out[f"{search}+pareto s{seed}"] = [*overrides, f"search.seed={seed}", *PARETO]
    return out


def experiment_name(variant: str) -> str:
    return "se_" + variant.replace("+", "_").replace(" ", "_")


def run_sweep(variant: str, overrides: Sequence[str], work: Path, uri: str) -> None:
    """The sweep as a user runs it, unless a finished one of this variant is already in the store."""
    client, name = client_for(uri), experiment_name(variant)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and client.search_runs([experiment.experiment_id], filter_string=(
            f"tags.`{SWEEP_TAG}` != '' and attributes.status = 'FINISHED'")):
        print(f"{variant}: reusing the finished sweep in {work}", flush=True)
        return
    start = time.monotonic()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO_ROOT), "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-m", "orchestrator.sweep", f"experiment={name}", *overrides], cwd=work,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {variant} sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    print(f"{variant}: {time.monotonic() - start:.0f} s", flush=True)


def trials_of(uri: str, variant: str) -> list[dict[str, Any]]:
    """The variant's trials in the order they ended: record, epochs trained, stopped early or not."""
    client = client_for(uri)
    experiment = client.get_experiment_by_name(experiment_name(variant))
    runs = [r for r in child_runs(client, experiment.experiment_id) if r.info.status in ("FINISHED", "KILLED")]
    trials = []
    for run in sorted(runs, key=lambda r: r.info.end_time):
        epochs = len(client.get_metric_history(run.info.run_id, M.VAL_ACC_MEAN))
        trials.append({"record": run_record(run), "epochs": epochs, "stopped": STOPPED_TAG in run.data.tags})
    return trials


def curve(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """After each trial: trials so far, trial-epochs so far, and the front's hypervolume."""
    points, finished, epochs = [], [], 0
    for n, trial in enumerate(trials, 1):
        epochs += trial["epochs"]
        if trial["record"][M.PARAMS_TOTAL] is not None:
            finished.append(trial["record"])
        hv = summary_metrics(ParetoTable(finished), failed=0, stopped=0).get(GROUP, 0.0)
        points.append({"trials": n, "trial_epochs": epochs, "hypervolume": hv})
    return points


def summarise(variant: str, points: Sequence[Mapping[str, float]], target: float,
              trials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One table row: final hypervolume, effort, and the effort to reach ``target`` (None: never reached)."""
    reached = next((p for p in points if p["hypervolume"] >= target), None)
    return {"variant": variant, "trials": len(points), "stopped": sum(t["stopped"] for t in trials),
            "trial_epochs": points[-1]["trial_epochs"] if points else 0,
            "hypervolume": points[-1]["hypervolume"] if points else 0.0,
            "trials_to_target": reached["trials"] if reached else None,
            "epochs_to_target": reached["trial_epochs"] if reached else None}


def _pareto_effect(rows: Mapping[str, Mapping[str, Any]], base: str, stopped: str) -> tuple[float, float]:
    """Share of trial-epochs saved and of hypervolume lost by the ``stopped`` variant against ``base``."""
    a, b = rows[base], rows[stopped]
    return 1 - b["trial_epochs"] / a["trial_epochs"], 1 - b["hypervolume"] / a["hypervolume"]


def verdicts(rows: Mapping[str, Mapping[str, Any]], search_seeds: Sequence[int]) -> dict[str, float]:
    """The targets' numbers: each search's final hypervolume over the grid's (median over search seeds), and what
    scheduler=pareto saves and loses on the grid and on each search (medians over search seeds)."""
    grid = _pareto_effect(rows, "grid", "grid+pareto")
    out = {"grid_pareto_epoch_saving": grid[0], "grid_pareto_hv_loss": grid[1]}
    for search in SEARCHES:
        grid_hv = rows["grid"]["hypervolume"]
        out[f"{search}_hv_ratio"] = statistics.median(rows[f"{search} s{s}"]["hypervolume"] / grid_hv
                                                      for s in search_seeds)
        effects = [_pareto_effect(rows, f"{search} s{s}", f"{search}+pareto s{s}") for s in search_seeds]
        out[f"{search}_pareto_epoch_saving"] = statistics.median(saved for saved, _ in effects)
        out[f"{search}_pareto_hv_loss"] = statistics.median(lost for _, lost in effects)
    return out


def with_overrides(overrides: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``overrides`` with those of ``extra`` replacing the ones of the same key (Hydra refuses a key twice)."""
    keys = {o.split("=", 1)[0] for o in extra}
    return [o for o in overrides if o.split("=", 1)[0] not in keys] + list(extra)


def plot(curves: Mapping[str, Sequence[Mapping[str, float]]], target: float, path: Path) -> None:
    """Hypervolume against trials and trial-epochs; a variant and its scheduler=pareto twin share a colour, the
    twin dashed."""
    bases = list(dict.fromkeys(v.replace("+pareto", "") for v in curves))
    colours = {b: "black" if b == "grid" else f"C{i}" for i, b in enumerate(bases)}
    fig = Figure(figsize=(12, 5), layout="constrained")
    for ax, x, label in zip(fig.subplots(1, 2), ("trials", "trial_epochs"), ("trials", "trial-epochs")):
        for variant, points in curves.items():
            style = "--" if "pareto" in variant else "-"
            ax.plot([p[x] for p in points], [p["hypervolume"] for p in points], style, marker=".", label=variant,
                    color=colours[variant.replace("+pareto", "")], alpha=0.85)
        ax.axhline(target, color="tab:red", lw=1, ls=":", label="99% of the grid's final hypervolume")
        ax.set(xlabel=label, ylabel="front hypervolume (resnet26/all)", title=f"hypervolume against {label}")
        ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--search-seeds", default="0,1,2", help="seeds of the search itself (default 0,1,2)")
    parser.add_argument("--work-dir", default="runs/search_efficiency",
                        help="where the sweeps run and their MLflow store stays (reused by a rerun)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.search_seeds.split(",")]
    work = Path(args.work_dir + ("_quick" if args.quick else "")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work}/mlflow.db"
    info = machine_info()
    print(describe_machine(info), flush=True)
    plan = variants(seeds)
    curves, trials = {}, {}
    for variant, overrides in plan.items():
        run_sweep(variant, with_overrides(overrides, QUICK if args.quick else []), work, uri)
        trials[variant] = trials_of(uri, variant)
        curves[variant] = curve(trials[variant])
    target = (1 - HV_TOLERANCE) * curves["grid"][-1]["hypervolume"]
    rows = {v: summarise(v, curves[v], target, trials[v]) for v in plan}
    result = verdicts(rows, seeds)
    table = markdown_table(list(rows.values()), ["variant", "trials", "stopped", "trial_epochs", "hypervolume",
                                                  "trials_to_target", "epochs_to_target"],
                           {"hypervolume": ".1f"})
    print(table)
    if not args.quick:
        plot(curves, target, REPO_ROOT / PLOT)
    write_section(args, "search_efficiency", section(info, table, result, seeds, work))
    for name, value in result.items():
        print_result(f"search_efficiency_{name}", value)


def section(info: Mapping[str, Any], table: str, result: Mapping[str, float], seeds: Sequence[int],
            work: Path) -> str:
    met = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    lines = [
        "## Search efficiency: grid, Optuna and Pareto-aware stopping (`benchmarks/search_efficiency.py`)", "",
        describe_machine(info, timed=False),
        f"- sweeps in `{work.name}/` (search seeds {', '.join(map(str, seeds))}); `optuna`: TPE with Optuna's defaults "
        "(10 random trials first); `optuna4`: `search.startup_trials=4`", "",
        f"![hypervolume against trials and trial-epochs]({PLOT})", "",
        "`trials_to_target`, `epochs_to_target`: effort until the front's hypervolume first reached 99% of the "
        "grid's final one (– never). `stopped`: trials `scheduler=pareto` stopped early.", "", table, "",
    ]
    for search in SEARCHES:
        ratio = result[f"{search}_hv_ratio"]
        lines.append(f"- `{search}`: final hypervolume / the grid's (median over search seeds), {GRID_TRIALS // 2} "
                     f"trials against {GRID_TRIALS}: {ratio:.3f}; target >= {1 - HV_TOLERANCE:.2f}: "
                     f"{met(ratio >= 1 - HV_TOLERANCE)}")
    for base in ("grid", *SEARCHES):
        saved, lost = result[f"{base}_pareto_epoch_saving"], result[f"{base}_pareto_hv_loss"]
        lines.append(f"- `scheduler=pareto` on `{base}`{' (medians)' if base != 'grid' else ''}: {saved:.1%} of "
                     f"trial-epochs saved, {lost:.1%} hypervolume lost; target >= {EPOCH_SAVING:.0%} saved with <= "
                     f"{HV_LOSS:.0%} lost: {met(saved >= EPOCH_SAVING and lost <= HV_LOSS)}")
    return "\n".join([*lines, "", "```", *(f"RESULT search_efficiency_{k}={v:.4f}" for k, v in result.items()),
                      "```"])


if __name__ == "__main__":
    main()
