"""The sweep's parent run as its live page: Tune's callbacks keep its summary and front up to date as trials end."""

from __future__ import annotations

import logging
import time
from typing import Callable

from ray import tune

from orchestrator.front import finished, log_summary, publish_front, read_sweep, run_record, sweep_note
from orchestrator.table import ParetoTable
from orchestrator.tracking import STOPPED_TAG, client_for

log = logging.getLogger(__name__)
PUBLISH_EVERY_S = 10.0  # the live front is redrawn at most this often (and always at the end)
PUBLISH_SHARE = 0.04  # and takes at most this share of the sweep's time (the target is under 5%)


class SweepProgress(tune.Callback):
    """The parent run as the sweep's live page. As each trial finishes, its record (one MLflow read: that trial's
    run) joins the records kept here and the summary metrics are logged with step = trials finished (a trial the
    scheduler stops is tagged ``STOPPED_TAG`` and counted as stopped); the front
    (plots, tables, description, the tags that change) is republished at most every ``publish_every_s``, or less
    often when publishing is slow, so it takes at most ``PUBLISH_SHARE`` of the sweep's time; the closing
    publishes the final one. Runs on Tune's event loop: with fail-fast HTTP an outage skips an update, and an
    error here is logged, never allowed to stop the sweep."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, scheduler: str = "none",
                 publish_every_s: float = PUBLISH_EVERY_S) -> None:
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.scheduler, self.publish_every_s = scheduler, publish_every_s
        self._records: dict[str, dict] | None = None  # run id -> record; read from MLflow once, on first use
        self._failed = self._stopped = 0
        self._tagged: dict[str, str] = {}
        self._note = ""
        self._dirty, self._next_publish, self._published = False, 0.0, False

    @property
    def publish_due(self) -> bool:
        """Whether the next update publishes the front (its interval has passed)."""
        return time.monotonic() >= self._next_publish

    def publish(self) -> None:
        """Publish the front of the trials finished so far now, whether or not it is due."""
        self._safely(self._publish)

    def setup(self, **info) -> None:
        # What MLflow has before any trial event (a resumed sweep's finished and failed trials): read later, a
        # trial that just failed would be counted from MLflow and from its error event both.
        self._safely(self._load)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # Tune marks the result that made the scheduler stop a trial done; a trial's own last result is final.
        if result.get("done") and not result.get("final") and result.get("mlflow_run_id"):
            tag = f"{self.scheduler} at epoch {int(result.get('epoch', 0))}"
            self._update(lambda client: client.set_tag(result["mlflow_run_id"], STOPPED_TAG, tag), stopped=1)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        if result.get("final"):  # else stopped before its final report (a scheduler, Ctrl-C): not a finished trial
            self._update(lambda client: self._add(client.get_run(result["mlflow_run_id"])))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._update(lambda client: None, failed=1)

    def on_step_end(self, iteration, trials, **info) -> None:
        if self._dirty and self.publish_due:
            self.publish()

    def _add(self, run) -> None:
        if finished(run):
            self._records[run.info.run_id] = run_record(run)

    def _update(self, change: Callable, failed: int = 0, stopped: int = 0) -> None:
        def update(client) -> None:
            self._load(client)
            self._failed += failed
            self._stopped += stopped
            change(client)
            table = ParetoTable(self._records.values())  # one table for the summary and, when due, the front
            log_summary(client, self.parent_run_id, table, self._failed, self._stopped)
            self._dirty = True
            if self.publish_due:
                self._publish(client, table)
        self._safely(update)

    def _load(self, client) -> None:
        if self._records is None:  # a resumed sweep starts from what MLflow already has
            sweep = read_sweep(client, self.experiment_id, self.parent_run_id)
            self._records = {r["run_id"]: r for r in sweep.records}
            self._failed, self._stopped, self._tagged = sweep.failed, sweep.stopped, sweep.tagged
            self._note = sweep_note(client, client.get_run(self.parent_run_id))

    def _publish(self, client, table: ParetoTable | None = None) -> None:
        self._load(client)
        start = time.monotonic()
        if self._records:
            table = ParetoTable(self._records.values()) if table is None else table
            publish_front(client, self.parent_run_id, table, self._tagged, self._note)
        self._dirty = False
        took = time.monotonic() - start
        log.info("live page: the front of %d trial(s) published in %.2f s", len(self._records), took)
        # The first publish also pays one-time imports (plotly) and creates the tables: it sets no pace.
        pace = took / PUBLISH_SHARE if self._published else 0.0
        self._published = True
        self._next_publish = time.monotonic() + max(self.publish_every_s, pace)

    def _safely(self, step: Callable) -> None:
        try:
            step(client_for(self.tracking_uri))
        except Exception as error:
            log.warning("could not update the sweep's page in MLflow yet (%s); the final front is written at the end",
                        error)
