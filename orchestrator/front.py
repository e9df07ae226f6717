"""The Pareto front of a sweep (or an experiment) from its MLflow records: read, tabulate, publish.

Used by the sweep driver (after each finished trial and at the end) and by ``orchestrator.report``, so the
sweep's own plots and a report made days later come from the same code and the same records.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any, Mapping

from mlflow.tracking import MlflowClient

from bap import metrics as M
from orchestrator.plots import pareto_table, write_pareto_report
from orchestrator.tracking import ERROR_TAG, ERROR_TAG_LIMIT, PARETO_TAG, TRIAL_ID_TAG, child_runs


def run_record(run: Any) -> dict[str, Any]:
    """One trial as a plain record (the keys of ``orchestrator.plots.FIELDS``); None where a metric is missing."""
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    record = {
        "run_id": run.info.run_id,
        "domain_set": tags.get("domain_set", params.get("domain_set", "all")),
        "backbone": tags.get("backbone", params.get("model.backbone")),
        "sharing": tags.get("sharing", params.get("sharing")),
        "budget": float(tags.get("budget", params.get("budget", "nan"))),
        "seed": int(tags.get("seed", params.get("train.seed", 0))),
        "status": run.info.status,
    }
    for key in (M.ACC_MEAN, M.PARAMS_TOTAL, M.PARAMS_RATIO, M.MACS_MEAN, M.MACS_RATIO, M.DECATHLON_SCORE,
                M.UNION_FRACTION, M.OVERLAP, M.BUDGET_MET):
        record[key] = metrics.get(key)
    record[M.PROJECTION_HEAVY] = metrics.get(M.PROJECTION_HEAVY) == 1.0
    usage = [v for k, v in metrics.items() if k.startswith(M.budget_usage_key(""))]
    record["budget_usage_min"] = min(usage) if usage else None
    return record


def collect_records(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> list[dict]:
    """Finished trials (those with final pruned-model metrics) of one sweep, or of every sweep."""
    records = [run_record(r) for r in child_runs(client, experiment_id, parent_run_id)]
    return [r for r in records if r[M.PARAMS_TOTAL] is not None]


def publish_front(client: MlflowClient, run_id: str, records: list[dict], experiment_id: str | None = None) -> list[dict]:
    """Write the plots and CSV to ``run_id``'s artifacts and tag every trial ``pareto_optimal=true|false``."""
    table = pareto_table(records)
    with tempfile.TemporaryDirectory() as out:
        for path in write_pareto_report(records, out).values():
            client.log_artifact(run_id, path)
    for row in table:
        client.set_tag(row["run_id"], PARETO_TAG, str(bool(row["pareto_params"])).lower())
    return table


def format_table(table: list[dict]) -> str:
    """A fixed-width summary: one line per trial, front members starred."""
    head = f"{'':2}{'domain_set':<18}{'backbone':<10}{'sharing':<9}{'budget':>7}{'acc_mean':>10}" \
           f"{'params_ratio':>14}{'macs_ratio':>12}"
    lines = [head, "-" * len(head)]
    for r in table:
        def fmt(v, spec):
            return format(v, spec) if v is not None and not (isinstance(v, float) and math.isnan(v)) else "-"
        lines.append(f"{'*' if r.get('pareto_params') else '':2}{str(r['domain_set'])[:17]:<18}"
                     f"{str(r['backbone']):<10}{str(r['sharing']):<9}{fmt(r['budget'], '>7g')}"
                     f"{fmt(r['acc_mean'], '>10.2f')}{fmt(r['params_ratio'], '>14.3f')}{fmt(r['macs_ratio'], '>12.3f')}")
    for r in table:
        if r.get(M.PROJECTION_HEAVY):
            lines.append(f"! {r['run_id']}: projection_heavy (the final budget projection reshaped it), not on the front")
    lines.append("* on the accuracy-vs-parameters Pareto front of its group (domain set x backbone)")
    return "\n".join(lines)


def finish_sweep(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str,
                 errors: Mapping[str, str] | None = None) -> list[dict]:
    """Close a sweep in a true state: child runs still RUNNING become FAILED with the error when Tune reported
    their trial failed (``errors``: trial id -> error; a worker that died could not say so itself), else KILLED
    (interrupted, or stopped early by the scheduler); the front is published to the parent run, and the parent
    gets ``status``. Idempotent, so a replay from the spool may repeat it."""
    errors = errors or {}
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            error = errors.get(run.data.tags.get(TRIAL_ID_TAG, ""))
            if error is not None:
                client.set_tag(run.info.run_id, ERROR_TAG, error[:ERROR_TAG_LIMIT])
            client.set_terminated(run.info.run_id, "KILLED" if error is None else "FAILED")
    records = collect_records(client, experiment_id, parent_run_id)
    table = publish_front(client, parent_run_id, records) if records else []
    client.set_terminated(parent_run_id, status)
    return table
