"""Does BAP's default beat every baseline, annealed magnitude pruning included? The method study, read back from
MLflow, with paired 95% t-intervals over (draw, seed) units (METHOD 10).

The study is run by the product itself (Ray Tune + MLflow), one sweep per draw of data and backbone
(``data.seed``: the embedded images and the pretraining seed), then analysed here:

    for draw in 0 1 2 3 4; do python -m orchestrator.sweep preset=study data.seed=$draw; done
    python -m benchmarks.method_study            # reads experiment "study", writes BENCHMARKS.md

A unit is one (draw, seed) pair: every method ran every budget on it, so each unit gives every method a front, and
every comparison is a per-unit difference whose mean gets a Student t-interval (paired by draw and seed). Per unit:
each method's front hypervolume at the fixed reference (``orchestrator.pareto.HV_REFERENCE``) and over the params
range both compared methods cover; the default's accuracy minus the best baseline's at the default's params_ratio
(each baseline interpolated linearly along that unit's points, never extrapolated). Every pass rule reads a lower
bound. The default is chosen on the draws in ``CHOICE_DRAWS`` and judged on the others: the checks and the RESULT
line are the judged draws'; the choice draws' are shown beside them.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bap.config import BASELINES, SharingConfig
from benchmarks._common import (
    REPO_ROOT, add_common_args, describe_machine, git_commit, machine_info, markdown_table, print_result, write_section,
)
from orchestrator.pareto import HV_REFERENCE, hypervolume
from orchestrator.plots import plot_png
from orchestrator.stats import mean_ci
from orchestrator.table import ParetoTable
from orchestrator.trial_keys import BUDGET, DRAW, METHOD, SEED

EXPERIMENT = "study"
DEFAULT_METHOD = SharingConfig().loss
COMPARED = ("none", *BASELINES)  # BA² and every baseline the default must beat
CHOICE_DRAWS = (0, 1)  # the draws the default was chosen on; the others judge it
EQUAL_PARAMS_POINTS = 2.0  # accuracy above the best baseline at equal params_ratio, at budgets <= 0.5
EQUAL_PARAMS_BUDGET = 0.5
USAGE_SLACK = 0.03  # every domain ends within this far below its budget
FRONT_PLOT = "docs/method_study_front.png"  # the study's front, linked from its BENCHMARKS.md section
VALUES = ("acc_mean", "params_ratio", "macs_ratio", "budget_usage_min", "overlap")

Unit = tuple[int, int]  # (draw, seed)


class Study:
    """The study's records by (method, budget, unit); ``units`` restricts every statistic to some draws."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.runs: dict[tuple[str, float, Unit], Mapping[str, Any]] = {}
        for r in records:  # a rerun of the same cell and unit replaces the earlier one
            self.runs[(r[METHOD], r[BUDGET], (r[DRAW], r[SEED]))] = r
        order = ("none", *sorted({k[0] for k in self.runs} - {"none", *BASELINES}), *BASELINES)
        self.methods = [m for m in order if any(k[0] == m for k in self.runs)]
        self.budgets = sorted({k[1] for k in self.runs}, reverse=True)
        self.units = sorted({k[2] for k in self.runs})
        self.draws = sorted({u[0] for u in self.units})

    def value(self, key: str, method: str, budget: float, unit: Unit) -> float:
        run = self.runs.get((method, budget, unit))
        value = None if run is None else run.get(key)
        return math.nan if value is None else float(value)

    def points(self, method: str, unit: Unit) -> list[dict[str, float]]:
        """The method's trials on ``unit``, one (budget, accuracy, cost) per budget it ran."""
        out = []
        for b in self.budgets:
            acc, cost = self.value("acc_mean", method, b, unit), self.value("params_ratio", method, b, unit)
            if not (math.isnan(acc) or math.isnan(cost)):
                out.append({"budget": b, "accuracy": acc, "cost": cost})
        return out

    def accuracy_at(self, method: str, cost: float, unit: Unit) -> float:
        """The method's accuracy on ``unit`` interpolated at ``cost`` along its points (NaN outside their range)."""
        points = sorted(self.points(method, unit), key=lambda p: p["cost"])
        costs = [p["cost"] for p in points]
        if not points or not costs[0] <= cost <= costs[-1]:
            return math.nan
        return float(np.interp(cost, costs, [p["accuracy"] for p in points]))


def common_range_hypervolume(study: Study, a: str, b: str, unit: Unit) -> tuple[float, float]:
    """Both methods' hypervolumes over the params range both cover: costs below the dearer of the two cheapest
    points count as that cost, so reaching further down than the other method earns nothing here."""
    pa, pb = study.points(a, unit), study.points(b, unit)
    if not pa or not pb:
        return math.nan, math.nan
    low = max(min(p["cost"] for p in pa), min(p["cost"] for p in pb))
    clip = lambda points: [{**p, "cost": max(p["cost"], low)} for p in points]  # noqa: E731
    return hypervolume(clip(pa)), hypervolume(clip(pb))


def over_units(statistic: Callable[[Unit], float], units: Sequence[Unit]) -> tuple[float, float, float, int]:
    """(mean, low, high, n): the t-interval of ``statistic`` over the units where it is defined."""
    values = [statistic(u) for u in units]
    values = [v for v in values if not math.isnan(v)]
    return (*mean_ci(values), len(values))


def best_baseline_gap(study: Study, default: str, budget: float, unit: Unit) -> tuple[float, str]:
    """The default's accuracy at ``budget`` on ``unit`` minus the best baseline's at the default's params_ratio,
    and that baseline (NaN where no baseline's points reach that params_ratio)."""
    acc, cost = study.value("acc_mean", default, budget, unit), study.value("params_ratio", default, budget, unit)
    rivals = {b: study.accuracy_at(b, cost, unit) for b in COMPARED if b in study.methods}
    rivals = {b: a for b, a in rivals.items() if not math.isnan(a)}
    if math.isnan(acc) or not rivals:
        return math.nan, "–"
    best = max(rivals, key=rivals.get)
    return acc - rivals[best], best


def analyse(study: Study, units: Sequence[Unit], default: str = DEFAULT_METHOD) -> dict[str, Any]:
    """Hypervolumes, paired differences, equal-params gaps and the claim checks over ``units``."""
    result: dict[str, Any] = {"hv": {}, "hv_diff": {}, "hv_common": {}, "equal_params": {}, "checks": []}
    for m in study.methods:
        result["hv"][m] = over_units(lambda u, m=m: hypervolume(study.points(m, u)), units)
    if default not in study.methods:
        return result
    for b in [m for m in COMPARED if m in study.methods]:
        diff = over_units(lambda u, b=b: hypervolume(study.points(default, u)) - hypervolume(study.points(b, u)),
                          units)
        common = over_units(lambda u, b=b: float(np.subtract(*common_range_hypervolume(study, default, b, u))),
                            units)
        result["hv_diff"][b], result["hv_common"][b] = diff, common
        result["checks"].append((f"HV({default}) - HV({b}) > 0 (lower bound)", diff[1] > 0, diff))
        result["checks"].append((f"HV({default}) - HV({b}) over the params range both cover > 0 (lower bound)",
                                 common[1] > 0, common))
    for budget in [b for b in study.budgets if b <= EQUAL_PARAMS_BUDGET]:
        gap = over_units(lambda u, budget=budget: best_baseline_gap(study, default, budget, u)[0], units)
        result["equal_params"][budget] = gap
        result["checks"].append((f"budget {budget:g}: {default} at least {EQUAL_PARAMS_POINTS:g} points above the "
                                 "best baseline at its params_ratio (lower bound)", gap[1] >= EQUAL_PARAMS_POINTS, gap))
    for m in study.methods:
        if m in BASELINES and not m.endswith("_annealed"):
            continue  # one-shot baselines fill their budget once, by construction
        gaps = [study.value("budget_usage_min", m, b, u) - b for b in study.budgets if b < 1.0 for u in units]
        worst = min((g for g in gaps if not math.isnan(g)), default=math.nan)
        result["checks"].append((f"{m}: every domain ends within {USAGE_SLACK} below its budget",
                                 worst >= -USAGE_SLACK, (worst, worst, worst, len(gaps))))
    return result


def _fmt(estimate: Sequence[float], spec: str = ".1f") -> str:
    mean, low, high = estimate[:3]
    if math.isnan(mean):
        return "–"
    if not math.isfinite(low):
        return f"{mean:{spec}}"
    return f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"


def cell_rows(study: Study, units: Sequence[Unit]) -> list[dict[str, Any]]:
    rows = []
    for m in study.methods:
        for b in study.budgets:
            acc = [study.value("acc_mean", m, b, u) for u in units]
            n = sum(not math.isnan(a) for a in acc)
            if not n:
                continue
            row = {"method": m, "budget": b, "units": n}
            for key, spec in (("acc_mean", ".1f"), ("params_ratio", ".3f"), ("macs_ratio", ".3f"),
                              ("budget_usage_min", ".4f"), ("overlap", ".2f")):
                row[key] = _fmt(mean_ci([study.value(key, m, b, u) for u in units]), spec)
            rows.append(row)
    return rows


def win_rows(study: Study, default: str) -> list[dict[str, Any]]:
    """Per draw and budget: the default minus the best baseline at equal params, mean over seeds, and wins."""
    rows = []
    for draw in study.draws:
        units = [u for u in study.units if u[0] == draw]
        for budget in [b for b in study.budgets if b < 1.0]:
            gaps = [best_baseline_gap(study, default, budget, u) for u in units]
            values = [g for g, _ in gaps if not math.isnan(g)]
            if not values:
                continue
            rivals = sorted({name for g, name in gaps if not math.isnan(g)})
            rows.append({"draw": draw, "budget": budget, "role": "choice" if draw in CHOICE_DRAWS else "judged",
                         "gap (points)": _fmt(mean_ci(values)), "wins": f"{sum(v > 0 for v in values)}/{len(values)}",
                         "best baseline": ", ".join(rivals)})
    return rows


def report(study: Study, results: Mapping[str, Mapping[str, Any]], default: str) -> str:
    """``results``: role ("judged", "choice") -> ``analyse`` over that role's units."""
    cells = markdown_table(cell_rows(study, study.units), ["method", "budget", "units", "acc_mean", "params_ratio",
                                                           "macs_ratio", "budget_usage_min", "overlap"], {"budget": "g"})
    parts = [f"Cells over every unit: mean [95% t-interval]; `budget_usage_min` is a trial's smallest domain usage.\n\n"
             f"{cells}\n"]
    for role, result in results.items():
        hv = markdown_table([{"method": m, "hypervolume": _fmt(v), "units": v[3]} for m, v in result["hv"].items()],
                            ["method", "hypervolume", "units"])
        diffs = markdown_table([{"baseline": b, "HV difference": _fmt(d), "over the common range": _fmt(
            result["hv_common"][b]), "units": d[3]} for b, d in result["hv_diff"].items()],
            ["baseline", "HV difference", "over the common range", "units"])
        checks = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name}: {_fmt(ci, '.3f')}"
                           for name, ok, ci in result["checks"])
        parts.append(f"### {role.capitalize()} draws\n\nFront hypervolume per unit (reference params_ratio "
                     f"{HV_REFERENCE['cost']}, accuracy {HV_REFERENCE['accuracy']:g}%):\n\n{hv}\n\n"
                     f"HV({default}) - HV(baseline), paired by unit:\n\n{diffs}\n\nChecks:\n\n{checks}\n")
    wins = markdown_table(win_rows(study, default), ["draw", "budget", "role", "gap (points)", "wins",
                                                     "best baseline"], {"budget": "g"})
    parts.append(f"Win table: `{default}` minus the best baseline at its params_ratio, per draw (mean [t] over "
                 f"seeds) and budget; wins are seeds with a positive gap.\n\n{wins}")
    return "\n".join(parts)


def copy_models(client, study: Study, models_dir: str) -> int:
    """Download the first unit's pruned model of every cell as ``<method>_b<budget>.bap`` (for pruned_inference)."""
    os.makedirs(models_dir, exist_ok=True)
    copied = 0
    for m in study.methods:
        for b in study.budgets:
            run = next((study.runs[(m, b, u)] for u in study.units if (m, b, u) in study.runs), None)
            if run is None:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run["run_id"], "model/model.bap", tmp)
                shutil.copy(path, os.path.join(models_dir, f"{m}_b{b:g}.bap"))
            copied += 1
    return copied


def records_of(tracking_uri: str, experiment: str) -> tuple[Any, list[dict]]:
    from orchestrator.front import collect_records
    from orchestrator.tracking import client_for

    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"error: experiment {experiment!r} is not in {tracking_uri}; run "
                         "`python -m orchestrator.sweep preset=study data.seed=0` first")
    records = [r for r in collect_records(client, found.experiment_id) if r["status"] == "FINISHED"]
    if not records:
        raise SystemExit(f"error: experiment {experiment!r} has no finished trial yet")
    return client, records


def hv_margin_low(result: Mapping[str, Any]) -> float:
    """The smallest lower bound, over the compared methods, of HV(default) - HV(b): > 0 beats every one."""
    lows = [d[1] for d in result["hv_diff"].values()]
    return min(lows) if lows else math.nan


def main() -> None:
    from orchestrator.config import MlflowConfig

    parser = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--experiment", default=EXPERIMENT)
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    parser.add_argument("--models-dir", default=os.path.join("runs", "study_models"))
    args = parser.parse_args()
    start = time.perf_counter()
    client, records = records_of(args.tracking_uri or MlflowConfig().tracking_uri, args.experiment)
    study = Study(records)
    roles = {"judged": [u for u in study.units if u[0] not in CHOICE_DRAWS],
             "choice": [u for u in study.units if u[0] in CHOICE_DRAWS]}
    results = {role: analyse(study, units) for role, units in roles.items() if units}
    body = report(study, results, DEFAULT_METHOD)
    print(body)
    print(f"copied {copy_models(client, study, args.models_dir)} pruned models to {args.models_dir}")
    if not args.quick:
        plot_png(ParetoTable(records), "params", str(REPO_ROOT / FRONT_PLOT))
    margin = hv_margin_low(results["judged"]) if "judged" in results else math.nan
    section = f"""## Method study: the default against every baseline, paired t-intervals over draws and seeds (`benchmarks/method_study.py`)

{describe_machine(machine_info())}
- Runs: experiment `{args.experiment}`, {len(records)} finished trials: methods {', '.join(study.methods)} x budgets
  {', '.join(f'{b:g}' for b in study.budgets)} on {len(study.units)} (draw, seed) units, draws
  {', '.join(map(str, study.draws))}, each made by `python -m orchestrator.sweep preset=study data.seed=DRAW`
  (settings in `sweeps/preset/study.yaml`).
- Default `{DEFAULT_METHOD}` with bap's defaults, chosen on draws {', '.join(map(str, CHOICE_DRAWS))} and judged on
  the others. Analysed at commit `{git_commit()}`.

![fronts of the study: configuration means with 95% intervals]({FRONT_PLOT})

{body}

`RESULT hv_margin_low` = {margin:.2f}: the smallest lower bound, over the baselines, of HV({DEFAULT_METHOD}) -
HV(baseline) on the judged draws; positive means the default's front beats every baseline's.
"""
    write_section(args, "method_study", section)
    print(f"total {time.perf_counter() - start:.0f}s")
    print_result("hv_margin_low", margin)


if __name__ == "__main__":
    main()
