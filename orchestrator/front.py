"""The Pareto front of a sweep (or an experiment) from its MLflow records: read, summarise, tabulate, publish.

Used by the sweep driver (as trials finish and at the end) and by ``orchestrator.report``, so the sweep's own
page and a report made days later come from the same code and the same records. What a run page shows: the plots
and ``pareto.csv``, the front as an MLflow table (``front.json``, searchable in the UI), the front in the run's
description, and the summary metrics (``summary_metrics``) with the finished-trial count as their step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from typing import Any, Mapping, MutableMapping

import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from bap import metrics as M
from orchestrator.pareto import group_points, hypervolume, pareto_front
from orchestrator.plots import write_pareto_report
from orchestrator.table import ParetoTable, configuration_key, front_accuracy, group_key
from orchestrator.tracking import (COMMAND_TAG, ERROR_TAG, ERROR_TAG_LIMIT, PARETO_TAG, STOPPED_TAG, SWEEP_TAG,
                                   TRIAL_ID_TAG, iter_child_runs)
from orchestrator.trial_keys import BACKBONE, BUDGET, DOMAIN_SET, METHOD, read_trial_keys

FRONT_TABLE = "front.json"  # the front as an MLflow table artifact (``log_table``)
# The front's columns, in the description and the table artifact.
FRONT_COLUMNS = (DOMAIN_SET, BACKBONE, METHOD, BUDGET, "seeds", "acc_mean_mean", "acc_mean_low",
                 "acc_mean_high", "params_ratio_mean", "macs_ratio_mean")


def finished(run: Any) -> bool:
    """Whether ``run`` is a finished trial's: its final (pruned-model) metrics are in."""
    return M.PARAMS_TOTAL in run.data.metrics


def run_record(run: Any) -> dict[str, Any]:
    """One finished trial as a plain record (the keys of ``orchestrator.plots.FIELDS``); None where a metric is
    missing."""
    metrics, tags = run.data.metrics, run.data.tags
    record = {
        "run_id": run.info.run_id,
        **read_trial_keys(tags, run.data.params),
        "status": run.info.status,
        "sweep": tags.get(MLFLOW_PARENT_RUN_ID),  # its sweep's parent run (None: a run of orchestrator.train)
    }
    for key in (M.ACC_MEAN, M.PARAMS_TOTAL, M.PARAMS_RATIO, M.MACS_MEAN, M.MACS_RATIO, M.DECATHLON_SCORE,
                M.UNION_FRACTION, M.OVERLAP, M.BUDGET_MET):
        record[key] = metrics.get(key)
    record[M.PROJECTION_HEAVY] = metrics.get(M.PROJECTION_HEAVY) == 1.0
    usage = [v for k, v in metrics.items() if k.startswith(M.budget_usage_key(""))]
    record["budget_usage_min"] = min(usage) if usage else None
    return record


@dataclasses.dataclass
class SweepRuns:
    """What the front and the summary need of a sweep's child runs (or of every sweep's, for the report)."""

    records: list[dict] = dataclasses.field(default_factory=list)  # finished trials, as ``run_record``s
    tagged: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> its pareto_optimal tag as read
    running: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> trial id, runs still RUNNING
    failed: int = 0
    stopped: int = 0  # trials the scheduler stopped early (tagged STOPPED_TAG)


def read_sweep(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> SweepRuns:
    """One paged pass over the child runs of ``parent_run_id`` (or of every sweep in the experiment) that keeps
    only a small record of each, never the runs themselves (their params, metrics and tags: 27 KB a run)."""
    sweep = SweepRuns()
    for run in iter_child_runs(client, experiment_id, parent_run_id):
        run_id, tags = run.info.run_id, run.data.tags
        if finished(run):
            sweep.records.append(run_record(run))
        if PARETO_TAG in tags:
            sweep.tagged[run_id] = tags[PARETO_TAG]
        if run.info.status == "RUNNING":
            sweep.running[run_id] = tags.get(TRIAL_ID_TAG, "")
        sweep.failed += run.info.status == "FAILED"
        sweep.stopped += STOPPED_TAG in tags
    return sweep


def collect_records(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> list[dict]:
    """Finished trials (those with final pruned-model metrics) of one sweep, or of every sweep."""
    return read_sweep(client, experiment_id, parent_run_id).records


def summary_metrics(table: ParetoTable, failed: int, stopped: int) -> dict[str, float]:
    """The sweep so far, for its parent run: trials finished, failed and stopped early, the number of configurations
    on the fronts, each group's hypervolume (accuracy vs params_ratio, against ``pareto.HV_REFERENCE``) and the best
    configuration-mean accuracy at each budget (to 2 decimals). Seeds of one configuration count as one point, their mean."""
    points = table.configurations
    metrics = {M.TRIALS_FINISHED: float(len(table.records)), M.TRIALS_FAILED: float(failed),
               M.TRIALS_STOPPED: float(stopped), M.FRONT_SIZE: 0.0}
    for (domain_set, backbone), members in group_points(points, group_key).items():
        # MLflow keys take no "+": dtd+svhn -> dtd.svhn
        metrics[M.hypervolume_key(f"{backbone}/{domain_set.replace('+', '.')}")] = hypervolume(
            members, front_accuracy, M.PARAMS_RATIO)
        metrics[M.FRONT_SIZE] += len(pareto_front(members, front_accuracy, M.PARAMS_RATIO))
    # Budgets to 2 decimals: a search draws them from a continuous range, and one metric per draw reads as noise.
    for budget, members in group_points(points, lambda p: round(float(p[BUDGET]), 2)).items():
        accuracies = [front_accuracy(p) for p in members if front_accuracy(p) is not None]
        if accuracies:
            metrics[M.best_acc_key(f"b{budget:g}")] = max(accuracies)
    return metrics


def hypervolume_by_sweep(records: list[dict]) -> list[dict]:
    """Each sweep's front hypervolume per group (``summary_metrics``'s, on that sweep's records alone): one row per
    sweep and group, comparable across the sweeps of an experiment since the reference is fixed."""
    rows = []
    for sweep, members in group_points(records, "sweep").items():
        metrics = summary_metrics(ParetoTable(members), failed=0, stopped=0)
        prefix = M.hypervolume_key("")
        rows += [{"sweep": sweep, "group": key[len(prefix):], "trials": len(members), "hypervolume": value}
                 for key, value in metrics.items() if key.startswith(prefix)]
    return rows


def log_summary(client: MlflowClient, run_id: str, table: ParetoTable, failed: int, stopped: int) -> None:
    """``summary_metrics`` in one request, with the finished-trial count as the step."""
    now, step = int(time.time() * 1000), len(table.records)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step)
                                      for k, v in summary_metrics(table, failed, stopped).items()])


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def front_rows(table: ParetoTable) -> list[dict]:
    """One row per configuration on its group's accuracy-vs-params front (``FRONT_COLUMNS``)."""
    rows: dict[tuple, dict] = {}
    for row in table.rows:
        if row.get("pareto_params"):
            key = configuration_key(row)
            rows.setdefault(key, {c: row.get(c) for c in FRONT_COLUMNS})
    return list(rows.values())


def front_markdown(table: ParetoTable) -> str:
    """The front as a markdown table: configuration means with their 95% intervals over seeds."""
    rows = front_rows(table)
    if not rows:
        return "No finished trial yet."
    lines = ["| domain set | backbone | sharing | budget | seeds | acc_mean (95% CI) | params_ratio | macs_ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = "" if r["acc_mean_low"] is None else f" ({_cell(r['acc_mean_low'])}-{_cell(r['acc_mean_high'])})"
        lines.append(f"| {r['domain_set']} | {r['backbone']} | {r['sharing']} | {_cell(r['budget'])} | {r['seeds']} "
                     f"| {_cell(r['acc_mean_mean'])}{interval} | {_cell(r['params_ratio_mean'])} "
                     f"| {_cell(r['macs_ratio_mean'])} |")
    return "\n".join(lines)


def _log_front_table(client: MlflowClient, run_id: str, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows, columns=list(FRONT_COLUMNS))
    if FRONT_TABLE not in {a.path for a in client.list_artifacts(run_id)}:
        client.log_table(run_id, frame, FRONT_TABLE)  # also marks the file as a table for the UI
        return
    # log_table would append to it: the front replaces the last one, in log_table's own format.
    with tempfile.TemporaryDirectory() as out:
        path = os.path.join(out, FRONT_TABLE)
        frame.to_json(path, orient="split", index=False)
        client.log_artifact(run_id, path)


def publish_front(client: MlflowClient, run_id: str, table: ParetoTable,
                  tagged: MutableMapping[str, str] | None = None, note: str = "") -> None:
    """Publish the front of ``table`` to ``run_id``: the plots and CSV, the front table artifact and a description
    (``note`` above the front's markdown table); tag each trial ``pareto_optimal=true|false``. ``tagged`` (run id ->
    the tag value it has) skips trials whose tag would not change, and is kept up to date."""
    with tempfile.TemporaryDirectory() as out:
        for path in write_pareto_report(table, out).values():
            client.log_artifact(run_id, path)
    _log_front_table(client, run_id, front_rows(table))
    head = "**The front** (accuracy vs parameters per domain set x backbone; configuration means over seeds):"
    client.set_tag(run_id, MLFLOW_RUN_NOTE, f"{head}\n\n{front_markdown(table)}\n\n{note}".strip())
    tagged = {} if tagged is None else tagged
    for row in table.rows:
        flag = str(bool(row["pareto_params"])).lower()
        if tagged.get(row["run_id"]) != flag:
            client.set_tag(row["run_id"], PARETO_TAG, flag)
            tagged[row["run_id"]] = flag


def format_table(table: ParetoTable) -> str:
    """A fixed-width summary: one line per trial, front members starred."""
    head = f"{'':2}{'domain_set':<18}{'backbone':<10}{'sharing':<9}{'budget':>7}{'acc_mean':>10}" \
           f"{'params_ratio':>14}{'macs_ratio':>12}"
    lines = [head, "-" * len(head)]
    for r in table.rows:
        def fmt(v, spec):
            return format(v, spec) if v is not None and not (isinstance(v, float) and math.isnan(v)) else "-"
        lines.append(f"{'*' if r.get('pareto_params') else '':2}{str(r['domain_set'])[:17]:<18}"
                     f"{str(r['backbone']):<10}{str(r['sharing']):<9}{fmt(r['budget'], '>7g')}"
                     f"{fmt(r['acc_mean'], '>10.2f')}{fmt(r['params_ratio'], '>14.3f')}{fmt(r['macs_ratio'], '>12.3f')}")
    for r in table.rows:
        if r.get(M.PROJECTION_HEAVY):
            lines.append(f"! {r['run_id']}: projection_heavy (the final budget projection reshaped it), not on the front")
    lines.append("* on the accuracy-vs-parameters Pareto front of its group (domain set x backbone)")
    return "\n".join(lines)


def sweep_note(client: MlflowClient, parent: Any) -> str:
    """The head of a sweep's description, from its parent run: how it was started, resumed and reported, and the
    front's plot. ``publish_front`` puts the front's table first, where the UI shows it without a click."""
    experiment = client.get_experiment(parent.info.experiment_id).name
    command = parent.data.tags.get(COMMAND_TAG)
    lines = []
    if command:
        lines += [f"- started with: `{command}`"]
        if SWEEP_TAG in parent.data.tags:
            lines += [f"- resume it: `{command} resume={parent.data.tags[SWEEP_TAG]}`"]
    lines += [f"- report every sweep of the experiment: `python -m orchestrator.report experiment={experiment} "
              f"mlflow.tracking_uri={client.tracking_uri}`",
              f"- files: `pareto_params.png`, `pareto_macs.png`, `pareto.html` (interactive), `pareto.csv` (every "
              f"trial), `{FRONT_TABLE}` (the front as an MLflow table)", "",
              # The UI's own artifact address, relative to the page: the plot shows in the description.
              f"![accuracy vs parameters](get-artifact?path=pareto_params.png&run_uuid={parent.info.run_id})"]
    return "\n".join(lines)


def finish_sweep(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str,
                 errors: Mapping[str, str] | None = None) -> ParetoTable:
    """Close a sweep in a true state: child runs still RUNNING become FAILED with the error when Tune reported
    their trial failed (``errors``: trial id -> error; a worker that died could not say so itself), else KILLED
    (interrupted, or stopped early by the scheduler); the front and the final summary are published to the parent
    run, and the parent gets ``status``. Idempotent, so a replay from the spool may repeat it. One read of the
    sweep's runs."""
    errors = errors or {}
    sweep = read_sweep(client, experiment_id, parent_run_id)
    for run_id, trial_id in sweep.running.items():
        error = errors.get(trial_id)
        if error is not None:
            client.set_tag(run_id, ERROR_TAG, error[:ERROR_TAG_LIMIT])
        client.set_terminated(run_id, "KILLED" if error is None else "FAILED")
        sweep.failed += error is not None
    table = ParetoTable(sweep.records)
    if sweep.records:
        publish_front(client, parent_run_id, table, sweep.tagged, sweep_note(client, client.get_run(parent_run_id)))
    log_summary(client, parent_run_id, table, sweep.failed, sweep.stopped)
    client.set_terminated(parent_run_id, status)
    return table
