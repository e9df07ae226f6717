"""Does BAP beat pruning at random? The method study, read back from MLflow, with confidence intervals over seeds.

The study is run by the product itself (Ray Tune + MLflow), then analysed here:

    python -m orchestrator.sweep preset=study          # methods x budgets 1/0.75/0.5/0.25 x seeds 0-4
    python -m benchmarks.method_study                  # reads experiment "study", writes BENCHMARKS.md

Per (method, budget) cell: mean and 95% t-interval over seeds of acc_mean, params_ratio, macs_ratio, the smallest
domain usage B_d and the overlap. Per method: its front on the cell means and the front's hypervolume
(``orchestrator.pareto.HV_REFERENCE``), with a bootstrap interval over seeds; the default method against each
baseline: paired bootstrap intervals of the hypervolume difference and of the accuracy difference at equal
params_ratio (each method's cell means interpolated linearly in params_ratio). Every claim check states its interval.
The seed-0 pruned model of every cell is copied to ``--models-dir`` for ``pruned_inference`` to time real models.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np

from bap import config
from bap.config import SharingConfig
from benchmarks._common import (
    REPO_ROOT, add_common_args, describe_machine, git_commit, machine_info, markdown_table, print_result, write_section,
)
from orchestrator.pareto import HV_REFERENCE, hypervolume
from orchestrator.plots import plot_png
from orchestrator.stats import bootstrap_ci, mean_ci
from orchestrator.table import ParetoTable
from orchestrator.trial_keys import BUDGET, METHOD, SEED

EXPERIMENT = "study"
DEFAULT_METHOD = SharingConfig().loss
COMPARED_WITH = ("none", *config.BASELINES)  # what a method result is measured against
CHEAP_BASELINES = ("random_shared", "magnitude_shared")
PARAMS_MARGIN = 0.10  # the default's union params_ratio at least this far below none's
EQUAL_PARAMS_POINTS = 3.0  # accuracy above the cheap baselines at equal params_ratio
USAGE_SLACK = 0.03  # every domain ends within this far below its budget
FRONT_PLOT = "docs/method_study_front.png"  # the study's front, linked from its BENCHMARKS.md section
VALUES = ("acc_mean", "params_ratio", "macs_ratio", "budget_usage_min", "overlap")


class Study:
    """The study's records as arrays: ``value[key][method][budget]`` is one entry per seed (NaN where missing)."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.methods = sorted({r[METHOD] for r in records}, key=_method_order)
        self.budgets = sorted({r[BUDGET] for r in records}, reverse=True)
        self.seeds = sorted({r[SEED] for r in records})
        self.runs = {}
        for r in records:  # a rerun of the same cell and seed replaces the earlier one
            self.runs[(r[METHOD], r[BUDGET], r[SEED])] = r
        self.value = {
            key: {m: {b: np.array([_get(self.runs.get((m, b, s)), key) for s in self.seeds]) for b in self.budgets}
                  for m in self.methods}
            for key in VALUES
        }

    def means(self, method: str, seeds: np.ndarray) -> list[dict[str, float]]:
        """The method's cell means over ``seeds`` (positions, repeats allowed): one point per budget."""
        points = []
        for b in self.budgets:
            acc, params = self.value["acc_mean"][method][b][seeds], self.value["params_ratio"][method][b][seeds]
            if np.isnan(acc).all():
                continue
            points.append({"budget": b, "accuracy": float(np.nanmean(acc)), "cost": float(np.nanmean(params))})
        return points

    def hypervolume(self, method: str, seeds: np.ndarray) -> float:
        return hypervolume(self.means(method, seeds))

    def accuracy_at(self, method: str, params: float, seeds: np.ndarray) -> float:
        """The method's mean accuracy interpolated at ``params`` along its cell means (NaN outside their range)."""
        points = sorted(self.means(method, seeds), key=lambda p: p["cost"])
        costs = [p["cost"] for p in points]
        if not points or not costs[0] <= params <= costs[-1]:
            return math.nan
        return float(np.interp(params, costs, [p["accuracy"] for p in points]))


def _method_order(name: str) -> tuple[int, str]:
    """bap.config's order (none, the losses, the baselines), then any other name."""
    order = config.SHARING_OPTIONS
    return (order.index(name) if name in order else len(order), name)


def _get(record: Mapping[str, Any] | None, key: str) -> float:
    value = None if record is None else record.get(key)
    return math.nan if value is None else float(value)


def _fmt_ci(mean: float, low: float, high: float, spec: str) -> str:
    if math.isnan(mean):
        return "–"
    if not math.isfinite(low):
        return f"{mean:{spec}}"
    return f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"


def cell_rows(study: Study) -> list[dict[str, Any]]:
    rows = []
    for m in study.methods:
        for b in study.budgets:
            acc = study.value["acc_mean"][m][b]
            if np.isnan(acc).all():
                continue
            row = {"method": m, "budget": b, "seeds": int((~np.isnan(acc)).sum())}
            for key, spec in (("acc_mean", ".1f"), ("params_ratio", ".3f"), ("macs_ratio", ".3f"),
                              ("overlap", ".2f")):
                row[key] = _fmt_ci(*mean_ci(list(study.value[key][m][b])), spec)
            usage = study.value["budget_usage_min"][m][b]
            row["B_d"] = _fmt_ci(*mean_ci(list(usage)), ".4f")
            row["min B_d"] = f"{np.nanmin(usage):.3f}" if not np.isnan(usage).all() else "–"
            rows.append(row)
    return rows


def analyse(study: Study, default: str = DEFAULT_METHOD, resamples: int = 2000) -> dict[str, Any]:
    """Hypervolumes, paired differences, equal-params accuracy and the claim checks, each with its interval."""
    n = len(study.seeds)
    everyone = np.arange(n)
    result: dict[str, Any] = {"hv": {}, "hv_diff": {}, "equal_params": {}, "params_gap": {}, "checks": []}
    for m in study.methods:
        result["hv"][m] = bootstrap_ci(lambda idx, m=m: study.hypervolume(m, idx), n, resamples)
    if default not in study.methods:
        return result
    baselines = [b for b in COMPARED_WITH if b in study.methods]
    for b in baselines:
        diff = bootstrap_ci(lambda idx, b=b: study.hypervolume(default, idx) - study.hypervolume(b, idx), n, resamples)
        result["hv_diff"][b] = diff
        result["checks"].append((f"hypervolume of {default} above {b}'s (95% CI of the difference above 0)",
                                 diff[1] > 0, diff))
    pruned = [p for p in study.means(default, everyone) if p["budget"] < 1.0]
    for b in CHEAP_BASELINES:
        if b not in study.methods:
            continue
        for point in pruned:
            budget = point["budget"]

            def gap(idx, b=b, budget=budget):
                own = next(p for p in study.means(default, idx) if p["budget"] == budget)
                return own["accuracy"] - study.accuracy_at(b, own["cost"], idx)

            diff = bootstrap_ci(gap, n, resamples)
            result["equal_params"][(b, budget)] = diff
            result["checks"].append((f"budget {budget:g}: {default} at least {EQUAL_PARAMS_POINTS:g} points above {b} at "
                                     f"its params_ratio {point['cost']:.3f}", diff[0] >= EQUAL_PARAMS_POINTS, diff))
    if "none" in study.methods:
        for point in pruned:
            budget = point["budget"]

            def params_gap(idx, budget=budget):
                return float(np.nanmean(study.value["params_ratio"]["none"][budget][idx])
                             - np.nanmean(study.value["params_ratio"][default][budget][idx]))

            def acc_gap(idx, budget=budget):
                return float(np.nanmean(study.value["acc_mean"][default][budget][idx])
                             - np.nanmean(study.value["acc_mean"]["none"][budget][idx]))

            p, a = bootstrap_ci(params_gap, n, resamples), bootstrap_ci(acc_gap, n, resamples)
            result["params_gap"][budget] = (p, a)
            result["checks"].append((f"budget {budget:g}: {default}'s params_ratio at least {PARAMS_MARGIN:g} below "
                                     f"none's, accuracy not significantly lower", p[0] >= PARAMS_MARGIN and a[2] >= 0,
                                     p))
    for m in study.methods:
        if m in config.BASELINES:
            continue
        worst = min((np.nanmin(study.value["budget_usage_min"][m][b]) - b for b in study.budgets if b < 1.0
                     and not np.isnan(study.value["budget_usage_min"][m][b]).all()), default=math.nan)
        result["checks"].append((f"{m}: every domain ends within {USAGE_SLACK} below its budget",
                                 worst >= -USAGE_SLACK, (worst, worst, worst)))
    return result


def copy_models(client, study: Study, models_dir: str) -> int:
    """Download the seed-0 (else lowest-seed) pruned model of every cell as ``<method>_b<budget>.bap``."""
    os.makedirs(models_dir, exist_ok=True)
    copied = 0
    for m in study.methods:
        for b in study.budgets:
            run = next((study.runs[(m, b, s)] for s in study.seeds if (m, b, s) in study.runs), None)
            if run is None:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run["run_id"], "model/model.bap", tmp)
                shutil.copy(path, os.path.join(models_dir, f"{m}_b{b:g}.bap"))
            copied += 1
    return copied


def _ci_text(estimate: tuple[float, float, float], spec: str = ".1f") -> str:
    return _fmt_ci(*estimate, spec)


def report(study: Study, result: Mapping[str, Any], default: str) -> str:
    cells = markdown_table(cell_rows(study), ["method", "budget", "seeds", "acc_mean", "params_ratio", "macs_ratio",
                                              "B_d", "min B_d", "overlap"], {"budget": "g"})
    hv_rows = [{"method": m, "hypervolume": _ci_text(hv)} for m, hv in result["hv"].items()]
    hv_table = markdown_table(hv_rows, ["method", "hypervolume"])
    diffs = markdown_table([{"baseline": b, f"HV({default}) - HV(baseline)": _ci_text(d)}
                            for b, d in result["hv_diff"].items()], ["baseline", f"HV({default}) - HV(baseline)"])
    equal = markdown_table([{"baseline": b, "budget": budget, "accuracy difference (points)": _ci_text(d)}
                            for (b, budget), d in result["equal_params"].items()],
                           ["baseline", "budget", "accuracy difference (points)"], {"budget": "g"}) \
        if result["equal_params"] else "(no cheap baseline in the study)"
    checks = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name} — {_ci_text(ci, '.3f')}" for name, ok, ci in result["checks"])
    return f"""Cells: mean [95% t-interval] over seeds; `B_d` is each seed's smallest domain usage, `min B_d` the smallest
of any seed.

{cells}

Front hypervolume per method (cell means; reference params_ratio {HV_REFERENCE['cost']}, accuracy
{HV_REFERENCE['accuracy']:g}%; estimate [95% bootstrap interval over seeds]):

{hv_table}

Paired differences against the baselines (the same seeds resampled for both):

{diffs}

Accuracy of `{default}` minus each cheap baseline's at `{default}`'s params_ratio (baseline interpolated along its
cell means):

{equal}

Claim checks (interval shown after the dash):

{checks}"""


def records_of(tracking_uri: str, experiment: str) -> tuple[Any, list[dict]]:
    from orchestrator.front import collect_records
    from orchestrator.tracking import client_for

    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"error: experiment {experiment!r} is not in {tracking_uri}; run "
                         "`python -m orchestrator.sweep preset=study` first")
    records = [r for r in collect_records(client, found.experiment_id) if r["status"] == "FINISHED"]
    if not records:
        raise SystemExit(f"error: experiment {experiment!r} has no finished trial yet")
    return client, records


def main() -> None:
    from orchestrator.config import MlflowConfig

    parser = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--experiment", default=EXPERIMENT)
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    parser.add_argument("--models-dir", default=os.path.join("runs", "study_models"))
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    start = time.perf_counter()
    client, records = records_of(args.tracking_uri or MlflowConfig().tracking_uri, args.experiment)
    study = Study(records)
    result = analyse(study, resamples=200 if args.quick else args.resamples)
    body = report(study, result, DEFAULT_METHOD)
    print(body)
    copied = copy_models(client, study, args.models_dir)
    print(f"copied {copied} pruned models to {args.models_dir}")
    if not args.quick:
        plot_png(ParetoTable(records), "params", str(REPO_ROOT / FRONT_PLOT))
    margins = [d[1] for d in result["hv_diff"].values()]
    section = f"""## Method study: BAP against its baselines, 95% intervals over seeds (`benchmarks/method_study.py`)

{describe_machine(machine_info())}
- Runs: experiment `{args.experiment}`, {len(records)} finished trials: methods {', '.join(study.methods)} x budgets
  {', '.join(f'{b:g}' for b in study.budgets)} x seeds {', '.join(map(str, study.seeds))}, made by
  `python -m orchestrator.sweep preset=study` (settings in `sweeps/preset/study.yaml`).
- Default method `{DEFAULT_METHOD}` (bap's `SharingConfig` default, chosen before this run). Analysed at commit
  `{git_commit()}`; the trials ran on the same method code.

![fronts of the study: configuration means with 95% intervals]({FRONT_PLOT})

{body}

`RESULT hv_margin_low`: the smallest lower bound, over the baselines, of the 95% interval of HV({DEFAULT_METHOD}) -
HV(baseline); positive means the default's front beats every baseline's.
"""
    write_section(args, "method_study", section)
    print(f"total {time.perf_counter() - start:.0f}s")
    print_result("hv_margin_low", min(margins) if margins else math.nan)


if __name__ == "__main__":
    main()
