"""The end of a sweep: what trials spooled replayed, then the sweep closed in a true state (``front.finish_sweep``)
and the front's models registered; or, with MLflow unreachable, the closing left in the spool."""

from __future__ import annotations

import shlex

from orchestrator.config import SweepConfig
from orchestrator.errors import ClosingSpooled
from orchestrator.front import collect_records, finish_sweep
from orchestrator.model_registry import register_front_models
from orchestrator.spool import Recorder, sync_spools
from orchestrator.table import ParetoTable
from orchestrator.tracking import poll, with_retries


def close_sweep(cfg: SweepConfig, client, experiment_id: str, parent_run_id: str, parent: Recorder, status: str,
                errors: dict[str, str], spool_dir: str) -> ParetoTable:
    """Replay what trials spooled, then close the sweep (``front.finish_sweep``); returns the final Pareto table.
    When MLflow stays unreachable for ``mlflow.end_wait_s``, leave the closing in the parent's spool and raise
    ``ClosingSpooled``, whose message gives the command that finishes it."""
    wait_s = cfg.mlflow.end_wait_s
    # Writes that trials spooled while MLflow was down and could not replay before they ended (a trial
    # replays its own spool on its next successful write, so only an outage at a trial's end leaves any).
    left = _replay_spools(cfg.mlflow.tracking_uri, spool_dir, timeout_s=wait_s)
    if not left:
        try:
            table = with_retries(lambda: finish_sweep(client, experiment_id, parent_run_id, status, errors),
                                 "closing the sweep", timeout_s=wait_s)
        except RuntimeError:
            pass
        else:
            if cfg.model_registry:
                versions = with_retries(lambda: register_front_models(client, table.rows, cfg.model_registry),
                                        "registering the front's models", timeout_s=wait_s)
                print(f"registered {len(versions)} front model(s) as {cfg.model_registry!r} in the Model Registry")
            return table
    parent.finish_sweep(experiment_id, status, errors)
    if not parent.pending():  # the server came back just now and took the closing: read the front it published
        return ParetoTable(collect_records(client, experiment_id, parent_run_id))
    pending = {run: n for run, n in sync_spools(cfg.mlflow.tracking_uri, spool_dir, finish_sweep).items() if n}
    raise ClosingSpooled(
        f"error: MLflow at {cfg.mlflow.tracking_uri} is unreachable at the end of the sweep: {sum(pending.values())} "
        f"write(s) of {len(pending)} run(s), the Pareto front and the parent run's status ({status}) wait in "
        f"{spool_dir}; when it is back, run: python -m orchestrator.report "
        + shlex.join([f"experiment={cfg.experiment}", f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}",
                      f"spool_dir={spool_dir}", "sync=true",
                      *([f"model_registry={cfg.model_registry}"] if cfg.model_registry else [])]))


def _replay_spools(tracking_uri: str, spool_dir: str, timeout_s: float) -> dict[str, int]:
    """Replay every spooled run, waiting up to ``timeout_s`` for MLflow to come back; returns what is left."""
    left: dict[str, int] = {}

    def replayed() -> bool:
        left.clear()
        left.update({run: n for run, n in sync_spools(tracking_uri, spool_dir, finish_sweep).items() if n})
        return not left

    poll(replayed, timeout_s)
    return left
