"""Is the BAP union model smaller than the backbone at every budget, where BA² needs nearly all of it?

On the embedded data (the settings of ``budget_accuracy.py``) at budgets 1.0, 0.75, 0.5 and 0.25, trains:
- BAP with each sharing loss (int, union, jaccard) at the default weight;
- ``none``: BA² trained jointly (no sharing loss);
- ``random``: a naive baseline, random switches meeting the budget drawn independently per domain, never trained;
  only BN and heads learn, for the same steps;
- ``random-shared``: the same with one random draw for all domains (the union is then one domain's mask).
Every model is materialized (the union model) and counted. The paper's claim checked: the BAP union model is
smaller than the backbone at every budget < 1, while ``none`` needs nearly all of it, at similar accuracy.

    python -m benchmarks.pareto_quality [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Iterable, Mapping

import torch

from bap import train
from bap.config import DataConfig, SharingConfig
from bap.data import build_domains
from benchmarks._common import (add_common_args, describe_machine, machine_info, markdown_table, print_result,
                                write_section)
from benchmarks._training import experiment_config, pretrained_backbone, settings

BUDGETS = (1.0, 0.75, 0.5, 0.25)
BAP_LOSSES = ("int", "union", "jaccard")
METHODS = (*BAP_LOSSES, "none", "random", "random-shared")
DEFAULT_WEIGHT = SharingConfig().weight
# Seeds beyond 0 for the main comparison only: one training is ~30 s on 2 cores, the whole grid three times ~40 min.
REPEATED_BUDGET = 0.5
REPEATED_METHODS = ("jaccard", "none", "random")
EXTRA_SEEDS = (1, 2)
NEARLY_ALL = 0.9  # "none needs nearly all of the backbone": its union model keeps >= 90% of the parameters
SIMILAR_POINTS = 3.0  # "similar accuracy": BAP's acc_mean at most 3 points below none's (as budget_accuracy.py)


def plan(quick: bool) -> list[tuple[float, str, int]]:
    """(budget, method, seed) of every training. At budget 1.0 every switch is on, so the two random baselines
    coincide and only ``random`` runs there."""
    runs = [(b, m, 0) for b in BUDGETS for m in METHODS if not (b == 1.0 and m == "random-shared")]
    if not quick:
        runs += [(REPEATED_BUDGET, m, seed) for seed in EXTRA_SEEDS for m in REPEATED_METHODS]
    return runs


def quick_settings() -> dict:
    """budget_accuracy's quick settings, shortened further: the whole grid must fit in 60 s."""
    return dict(settings(True), epochs=1, steps=8)


def train_one(s: Mapping, weights: str, data: DataConfig, domains: Mapping, budget: float, method: str,
              seed: int) -> dict:
    """Train one (budget, method, seed) and return its table row."""
    start = time.perf_counter()
    sharing = method.replace("-", "_")  # random-shared is bap's random_shared baseline
    cfg = experiment_config(s, weights, data, budget, sharing, DEFAULT_WEIGHT, seed)
    metrics = train(cfg, domains=domains).metrics
    return {
        "budget": budget, "method": method, "seed": seed, "acc_mean": metrics["acc_mean"],
        **{d: metrics[f"acc/{d}"] for d in domains},
        "max B_d": max(v for k, v in metrics.items() if k.startswith("budget_usage/")),
        "union": metrics["union_fraction"], "params_ratio": metrics["params_ratio"],
        "macs_ratio": metrics["macs_ratio"], "time (s)": time.perf_counter() - start,
    }


def summarize(rows: Iterable[Mapping]) -> dict[tuple[float, str], dict]:
    """(budget, method) -> means over that cell's seeds of acc_mean, params_ratio and macs_ratio, and the count."""
    groups: dict[tuple[float, str], list[Mapping]] = {}
    for row in rows:
        groups.setdefault((row["budget"], row["method"]), []).append(row)
    return {
        key: {"budget": key[0], "method": key[1], "runs": len(group),
              **{k: statistics.mean(r[k] for r in group) for k in ("acc_mean", "params_ratio", "macs_ratio")}}
        for key, group in groups.items()
    }


def params_gap(cells: Mapping[tuple[float, str], Mapping]) -> float:
    """The RESULT: over budgets < 1, the mean of none's union params_ratio minus the mean of the BAP losses' ones.

    Positive: BAP's union model is smaller than BA²'s by that fraction of the backbone's parameters.
    """
    budgets = sorted({b for b, _ in cells if b < 1.0})
    return statistics.mean(
        cells[(b, "none")]["params_ratio"] - statistics.mean(cells[(b, loss)]["params_ratio"] for loss in BAP_LOSSES)
        for b in budgets
    )


def claim_checks(rows: Iterable[Mapping], cells: Mapping[tuple[float, str], Mapping]) -> dict[str, bool]:
    """The paper's claim and its parts, each a named PASS/FAIL (so where it does not hold is visible)."""
    rows = list(rows)
    checks = {"every run: each domain's binarised B_d <= budget":
              all(r["max B_d"] <= r["budget"] + 1e-9 for r in rows)}
    for b in sorted({b for b, _ in cells if b < 1.0}, reverse=True):
        bap = {loss: cells[(b, loss)] for loss in BAP_LOSSES}
        none = cells[(b, "none")]
        runs = f" ({none['runs']} seeds)" if none["runs"] > 1 else ""
        checks[f"{b:g}: every BAP loss's union model is smaller than the backbone (params_ratio < 1)"] = all(
            c["params_ratio"] < 1.0 for c in bap.values())
        checks[f"{b:g}: none needs nearly all of the backbone (params_ratio >= {NEARLY_ALL})"] = (
            none["params_ratio"] >= NEARLY_ALL)
        checks[f"{b:g}: every BAP loss's union model is smaller than none's"] = all(
            c["params_ratio"] < none["params_ratio"] for c in bap.values())
        checks[f"{b:g}: every BAP loss's acc_mean >= none's - {SIMILAR_POINTS:g} points{runs}"] = all(
            c["acc_mean"] >= none["acc_mean"] - SIMILAR_POINTS for c in bap.values())
        checks[f"{b:g}: learned switches beat random ones: jaccard acc_mean > random's{runs}"] = (
            cells[(b, "jaccard")]["acc_mean"] > cells[(b, "random")]["acc_mean"])
        checks[f"{b:g}: jaccard acc_mean > random-shared's (a random union of the budget's size)"] = (
            cells[(b, "jaccard")]["acc_mean"] > cells[(b, "random-shared")]["acc_mean"])
    return checks


def repeated_note(quick: bool) -> str:
    if quick:
        return "Every cell is one run (seed 0)."
    return (f"Every cell is one run (seed 0) except budget {REPEATED_BUDGET:g} for {', '.join(REPEATED_METHODS)}: "
            f"seeds 0, {', '.join(map(str, EXTRA_SEEDS))}, the summary gives their mean.")


def main() -> None:
    args = add_common_args(argparse.ArgumentParser(description=__doc__)).parse_args()
    s = quick_settings() if args.quick else settings(False)
    data = DataConfig(train_per_class=s["per_class"])
    start = time.perf_counter()
    weights = pretrained_backbone(s, data)
    domains = build_domains(data)

    rows = []
    for budget, method, seed in plan(args.quick):
        rows.append(train_one(s, weights, data, domains, budget, method, seed))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    cells = summarize(rows)
    checks = claim_checks(rows, cells)
    gap = params_gap(cells)

    ratio_formats = {"params_ratio": ".3f", "macs_ratio": ".3f", "acc_mean": ".1f", "budget": "g"}
    summary = markdown_table(list(cells.values()), ["budget", "method", "runs", "acc_mean", "params_ratio",
                                                    "macs_ratio"], ratio_formats)
    columns = ["budget", "method", "seed", "acc_mean", *domains, "max B_d", "union", "params_ratio", "macs_ratio",
               "time (s)"]
    runs_table = markdown_table(rows, columns, {**ratio_formats, **{c: ".1f" for c in [*domains, "time (s)"]},
                                                "max B_d": ".3f", "union": ".3f"})
    check_lines = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items())
    print(summary, runs_table, check_lines, sep="\n\n")
    body = f"""## Pareto quality: BAP against BA² and random switches (`benchmarks/pareto_quality.py{' --quick' if args.quick else ''}`)

{describe_machine(machine_info())}
- Settings: resnet26 at width {s['width']:g}, 32x32 images, targets {', '.join(domains)} ({s['per_class']} train images
  per class), backbone pretrained on the `shapes` source domain (cached); every method: {s['epochs']} epochs x
  {s['steps']} steps, one batch of 32 per domain per step, CPU. BAP sharing weight {DEFAULT_WEIGHT}.
- Methods: `int`, `union`, `jaccard`: BAP's sharing losses. `none`: BA² trained jointly. `random`: per domain and
  switched conv, `floor(budget * C_in)` random input channels on (checked with the method's `budget_usage`), drawn
  independently per domain, switches frozen, only BN and heads trained for the same steps. `random-shared`: one
  such draw for all domains. At budget 1 all switches are on, so `random` and `random-shared` coincide.
- `acc_mean`: mean top-1 (%) of the materialized union model over the domains' validation splits.
  `params_ratio` / `macs_ratio`: the union model against the single-domain backbone (one BN set, one head of mean
  size). `union`: fraction of switched conv weights any domain uses. {repeated_note(args.quick)}
- The claim checked: at every budget < 1, the BAP union model is smaller than the backbone while `none` needs
  nearly all of it (params_ratio >= {NEARLY_ALL}), at similar accuracy (within {SIMILAR_POINTS:g} points of `none`).
  Single-seed accuracies differ by several points from seed noise alone at this size.

Summary (mean over a cell's runs):

{summary}

All runs:

{runs_table}

{check_lines}

`RESULT none_minus_bap_params_ratio`: over budgets < 1, the mean of (`none`'s params_ratio minus the mean of the
three BAP losses' params_ratio), cells averaged over their seeds: {gap:.3f}. Positive means the BAP union model is
smaller than BA²'s by that fraction of the backbone.
"""
    write_section(args, "pareto_quality", body)
    print(f"total {time.perf_counter() - start:.0f}s")
    print_result("none_minus_bap_params_ratio", gap)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
