"""The Pareto report of an experiment, rebuilt from MLflow alone.

    python -m orchestrator.report experiment=NAME                     # every sweep of the experiment
    python -m orchestrator.report experiment=NAME sync=true           # first replay writes spooled while MLflow was down
    python -m orchestrator.report experiment=NAME include_heavy=true  # trials flagged projection_heavy on the front too

Hydra overrides like ``orchestrator.sweep``'s (``mlflow.tracking_uri=URI``, ``spool_dir=DIR``); the keys are
``orchestrator.config.ReportConfig``.

The front itself (records, table, plots) is ``orchestrator.front``, shared with the sweep driver.
"""

from __future__ import annotations

import os
import sys

from bap import metrics as M
from orchestrator.cli import QUIET_HYDRA
from orchestrator.config import ReportConfig
from orchestrator.config_store import REPORT_CONFIG_NAME
from orchestrator.errors import UsageError
from orchestrator.front import format_table, hypervolume_by_sweep, log_summary, publish_front, read_sweep
from orchestrator.mlflow_model import register_front_models
from orchestrator.spool import DEFAULT_SPOOLS, sync_spools
from orchestrator.tracking import client_for, use_fail_fast_http


def report(experiment: str, tracking_uri: str, sync: bool = False, spool_dir: str | None = None,
           include_heavy: bool = False, model_registry: str | None = None) -> list[dict]:
    """Rebuild the front of every sweep in ``experiment`` from MLflow into a new ``report`` run there.

    ``sync`` first replays the writes spooled while MLflow was down: from ``spool_dir``, or by default from
    ``DEFAULT_SPOOLS`` (relative to the current directory). ``include_heavy`` lets trials whose final budget
    projection was heavy onto the front (left off by default). ``model_registry`` registers the front's models under
    that name."""
    if sync:
        left = {}
        for directory in [spool_dir] if spool_dir else DEFAULT_SPOOLS:
            left.update(sync_spools(tracking_uri, os.path.abspath(directory)))
        print(f"synced {len(left)} spooled run(s); {sum(left.values())} write(s) still pending")
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
    table = publish_front(client, run.info.run_id, records, sweep.tagged, note)
    log_summary(client, run.info.run_id, records, failed=sweep.failed, stopped=sweep.stopped)
    client.set_terminated(run.info.run_id)
    print(format_table(table))
    names = {sweep: client.get_run(sweep).info.run_name if sweep else "(orchestrator.train runs)"
             for sweep in {r["sweep"] for r in records}}
    print("\nhypervolume of each sweep's front (accuracy x params_ratio; fixed reference, so sweeps compare):")
    for row in sorted(hypervolume_by_sweep(records), key=lambda r: (r["group"], -r["hypervolume"])):
        print(f"  {row['group']:<28}{names[row['sweep']]:<40}{row['trials']:>5} trials  {row['hypervolume']:8.2f}")
    if model_registry:
        versions = register_front_models(client, table, model_registry)
        print(f"registered {len(versions)} front model(s) as {model_registry!r} in the Model Registry")
    print(f"plots and CSV: run {run.info.run_id} ({run.info.artifact_uri})")
    return table


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
