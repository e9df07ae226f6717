"""The Pareto report of an experiment, rebuilt from MLflow alone.

    python -m orchestrator.report experiment=NAME                     # every sweep of the experiment
    python -m orchestrator.report experiment=NAME sync=true           # first replay writes spooled while MLflow was down
    python -m orchestrator.report experiment=NAME include_heavy=true  # trials flagged projection_heavy on the front too

Hydra overrides like ``orchestrator.sweep``'s (``mlflow.tracking_uri=URI``, ``spool_dir=DIR``); the keys are
``orchestrator.config.ReportConfig``.

The front itself (records, table, plots) is ``orchestrator.front``, shared with the sweep driver.
"""

from __future__ import annotations

import glob
import os
import sys

from bap import metrics as M
from orchestrator.cli import QUIET_HYDRA
from orchestrator.config import RayConfig, ReportConfig
from orchestrator.config_store import REPORT_CONFIG_NAME
from orchestrator.errors import ClosingSpooled, UsageError
from orchestrator.front import finish_sweep, format_table, hypervolume_by_sweep, log_summary, publish_front, read_sweep
from orchestrator.model_registry import register_front_models
from orchestrator.spool import DEFAULT_SPOOL, scoped, sync_spools
from orchestrator.table import ParetoTable
from orchestrator.tracking import check_mlflow, client_for, use_fail_fast_http

# `sync=true` without spool_dir= replays the experiment's folder in both default spools: orchestrator.train's (and
# a sweep's with a URI storage), and a sweep's beside its Tune results under the default ray.storage_path.
DEFAULT_SPOOLS = (DEFAULT_SPOOL, os.path.join(RayConfig().storage_path, "mlflow_spool"))


def sync_experiment(experiment: str, tracking_uri: str, spool_dir: str | None = None) -> None:
    """Replay what was spooled for ``experiment`` in the store at ``tracking_uri``: from ``spool_dir``, or from its
    folder in each of ``DEFAULT_SPOOLS``. Raises ``ClosingSpooled`` (exit 3) naming each run still pending and why:
    a sweep's parent run then stays open, and saying "synced" would not be true."""
    roots = [os.path.abspath(root) for root in DEFAULT_SPOOLS]
    directories = [os.path.abspath(spool_dir)] if spool_dir else [scoped(r, tracking_uri, experiment) for r in roots]
    left, reasons = {}, {}
    for directory in directories:
        left.update(sync_spools(tracking_uri, directory, finish_sweep, reasons))
    pending = {run: n for run, n in left.items() if n}
    print(f"synced {len(left)} spooled run(s); {sum(pending.values())} write(s) still pending")
    older = [root for root in roots if not spool_dir and glob.glob(os.path.join(root, "*.jsonl"))]
    if older:
        print(f"note: {' and '.join(older)} hold spools of a version that kept every experiment in one folder; "
              "replay them with spool_dir=" + older[0], file=sys.stderr)
    if pending:
        lines = "\n".join(f"  run {run}: {n} write(s); {reasons.get(run) or 'not replayed'}" for run, n in pending.items())
        raise ClosingSpooled(
            f"error: {sum(pending.values())} write(s) of {len(pending)} run(s) are still spooled in "
            f"{', '.join(directories)}, not in MLflow at {tracking_uri}; a sweep's closing among them leaves its "
            f"parent run open (RUNNING):\n{lines}\nRun this again once MLflow takes them. A run this store does not "
            "have (deleted, or another store's) never will: move its file out of the folder.")


def report(experiment: str, tracking_uri: str, sync: bool = False, spool_dir: str | None = None,
           include_heavy: bool = False, model_registry: str | None = None) -> list[dict]:
    """Rebuild the front of every sweep in ``experiment`` from MLflow into a new ``report`` run there.

    ``sync`` first replays the writes spooled while MLflow was down (``sync_experiment``). ``include_heavy`` lets trials whose final budget
    projection was heavy onto the front (left off by default). ``model_registry`` registers the front's models under
    that name."""
    check_mlflow(tracking_uri)
    if sync:
        sync_experiment(experiment, tracking_uri, spool_dir)
    client = client_for(tracking_uri)
    experiment_obj = client.get_experiment_by_name(experiment)
    if experiment_obj is None:
        known = [e.name for e in client.search_experiments()]
        raise UsageError(f"error: experiment={experiment!r} is not in {tracking_uri}; known: {', '.join(known)}")
    sweep = read_sweep(client, experiment_obj.experiment_id)  # one paged read of every trial
    records = sweep.records
    if not records:
        raise UsageError(f"error: experiment {experiment!r} has no finished trial yet")
    if include_heavy:
        for record in records:
            record[M.PROJECTION_HEAVY] = False
    run = client.create_run(experiment_obj.experiment_id, run_name="pareto-report", tags={"bap.report": "true"})
    note = (f"Report of every sweep of experiment `{experiment}`"
            f"{' (projection_heavy trials included)' if include_heavy else ''}: plots in `pareto_params.png` and "
            "`pareto.html`, every trial in `pareto.csv`.")
    table = ParetoTable(records)
    publish_front(client, run.info.run_id, table, sweep.tagged, note)
    log_summary(client, run.info.run_id, table, failed=sweep.failed, stopped=sweep.stopped)
    client.set_terminated(run.info.run_id)
    print(format_table(table))
    names = {sweep: client.get_run(sweep).info.run_name if sweep else "(orchestrator.train runs)"
             for sweep in {r["sweep"] for r in records}}
    print("\nhypervolume of each sweep's front (accuracy x params_ratio; fixed reference, so sweeps compare):")
    for row in sorted(hypervolume_by_sweep(records), key=lambda r: (r["group"], -r["hypervolume"])):
        print(f"  {row['group']:<28}{names[row['sweep']]:<40}{row['trials']:>5} trials  {row['hypervolume']:8.2f}")
    if model_registry:
        versions = register_front_models(client, table.rows, model_registry)
        print(f"registered {len(versions)} front model(s) as {model_registry!r} in the Model Registry")
    print(f"plots and CSV: run {run.info.run_id} ({run.info.artifact_uri})")
    return table.rows


def main(argv: list[str] | None = None) -> None:
    from orchestrator.cli import run_hydra

    use_fail_fast_http()

    def run(cfg: ReportConfig) -> None:
        report(cfg.experiment, cfg.mlflow.tracking_uri, cfg.sync, cfg.spool_dir, include_heavy=cfg.include_heavy,
               model_registry=cfg.model_registry)

    # Nothing left behind: no Hydra output directory or log file.
    run_hydra(run, QUIET_HYDRA + (sys.argv[1:] if argv is None else argv), config=REPORT_CONFIG_NAME)


if __name__ == "__main__":
    main()
