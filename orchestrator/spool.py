"""The durable spool: every MLflow write of a run goes through ``Recorder``, and nothing is lost.

When the tracking server cannot be reached a write is appended to the run's spool file and replayed, in order,
on the next write that succeeds or by ``python -m orchestrator.report sync=true``; training never waits on MLflow
(every entry point and trial worker opts in to ``orchestrator.tracking.use_fail_fast_http``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Iterable, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bap.atomic import atomic_path
from orchestrator.config import RayConfig
from orchestrator.tracking import DIGESTS_TAG, client_for, poll

log = logging.getLogger(__name__)

DEFAULT_SPOOL = os.path.join("runs", "mlflow_spool")  # orchestrator.train's (and a sweep's with a URI storage)
# `sync=true` without spool_dir= replays both: the one above and a sweep's beside its Tune results under the default
# ray.storage_path (orchestrator.sweep._spool_dir).
DEFAULT_SPOOLS = (DEFAULT_SPOOL, os.path.join(RayConfig().storage_path, "mlflow_spool"))
FINISH_SWEEP = "finish_sweep"
# MLflow's limits on one log_batch call.
_MAX_PARAMS, _MAX_METRICS = 100, 1000
# While writes wait in a spool, a new one joins them without calling MLflow again sooner than this: an outage
# costs each write an append, not a failed request and a rewrite of the whole spool.
RETRY_EVERY_S = 5.0


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Recorder:
    """Writes to one MLflow run; spools what the server does not take and replays it in order later."""

    def __init__(self, client: MlflowClient, run_id: str, spool_dir: str) -> None:
        self.client, self.run_id = client, run_id
        os.makedirs(spool_dir, exist_ok=True)
        self.spool_path = os.path.join(spool_dir, f"{run_id}.jsonl")
        self._failed_at: float | None = None

    # ---- writes -----------------------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        entries = [{"key": k, "value": float(v), "step": int(step or 0), "timestamp": now}
                   for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self._write({"op": "metrics", "metrics": entries})

    def log_params(self, params: Mapping[str, str]) -> None:
        self._write({"op": "params", "params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._write({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Artifacts are spooled by path; the file must stay where it is until replayed."""
        self._write({"op": "artifact", "path": os.path.abspath(path), "artifact_path": artifact_path})

    def log_text(self, text: str, name: str) -> None:
        directory = os.path.join(os.path.dirname(self.spool_path), f"{self.run_id}.files")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, os.path.basename(name))
        with open(path, "w") as f:
            f.write(text)
        self.log_artifact(path, os.path.dirname(name) or None)

    def terminate(self, status: str = "FINISHED") -> None:
        self._write({"op": "terminate", "status": status})

    def finish_sweep(self, experiment_id: str, status: str, errors: Mapping[str, str] | None = None) -> None:
        """On a sweep's parent run: ``orchestrator.front.finish_sweep`` (replayed after the trials' spools)."""
        self._write({"op": FINISH_SWEEP, "experiment_id": experiment_id, "status": status, "errors": errors or {}})

    # ---- spool ------------------------------------------------------------------------------------------------
    def pending(self) -> int:
        if not os.path.exists(self.spool_path):
            return 0
        with open(self.spool_path) as f:
            return sum(1 for line in f if line.strip())

    def flush(self, timeout_s: float = 0.0, interval_s: float = 2.0) -> bool:
        """Replay the spool, trying again for up to ``timeout_s``; True when nothing is left."""
        return poll(lambda: self._write(None), timeout_s, interval_s)

    def _write(self, entry: dict | None) -> bool:
        """Apply the spool, then ``entry``, in order; what MLflow does not take stays spooled. True when all went."""
        if entry is not None and self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_EVERY_S:
            self._append(entry)
            return False
        queue = self._read_spool()
        if entry is not None:
            queue.append(entry)
        done = 0
        try:
            for item in queue:
                self._apply(item)
                done += 1
        except Exception as error:  # any transport or server error: keep the rest for later
            self._failed_at = time.monotonic()
            log.warning("MLflow unreachable for run %s (%s); %d write(s) kept in %s", self.run_id,
                        type(error).__name__, len(queue) - done, self.spool_path)
            if done == 0 and entry is not None:  # the spool on disk is unchanged: the new write joins it
                self._append(entry)
                return False
        else:
            self._failed_at = None
        self._store_spool(queue[done:])
        return done == len(queue)

    def _append(self, entry: dict) -> None:
        with open(self.spool_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _read_spool(self) -> list[dict]:
        if not os.path.exists(self.spool_path):
            return []
        with open(self.spool_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def _store_spool(self, remaining: list[dict]) -> None:
        if not remaining:
            if os.path.exists(self.spool_path):
                os.remove(self.spool_path)
            return
        with atomic_path(self.spool_path) as tmp, open(tmp, "w") as f:
            f.writelines(json.dumps(item) + "\n" for item in remaining)

    def _apply(self, item: dict) -> None:
        op = item["op"]
        if op == "metrics":
            for chunk in _chunks([Metric(**m) for m in item["metrics"]], _MAX_METRICS):
                self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
        elif op == "params":
            existing = self.client.get_run(self.run_id).data.params
            # A retried trial logs its params again; MLflow rejects changing a param, so skip known ones.
            fresh = [Param(k, v) for k, v in item["params"].items() if k not in existing]
            for chunk in _chunks(fresh, _MAX_PARAMS):
                self.client.log_batch(self.run_id, params=chunk, synchronous=True)
        elif op == "tags":
            # The spool sits on shared storage: it never vouches for the sweep folder's files.
            tags = [RunTag(k, v) for k, v in item["tags"].items() if k != DIGESTS_TAG]
            self.client.log_batch(self.run_id, tags=tags, synchronous=True)
        elif op == "artifact":
            self.client.log_artifact(self.run_id, item["path"], item["artifact_path"])
        elif op == "terminate":
            self.client.set_terminated(self.run_id, item["status"])
        elif op == FINISH_SWEEP:
            # Imported here: the front pulls in matplotlib and scipy (~1 s), which a trial's worker never needs.
            from orchestrator.front import finish_sweep

            finish_sweep(self.client, item["experiment_id"], self.run_id, item["status"], item["errors"])
        else:
            raise ValueError(f"unknown spool entry {op!r} in {self.spool_path}")


def _closes_sweep(path: str) -> bool:
    with open(path) as f:
        return FINISH_SWEEP in f.read()


def sync_spools(tracking_uri: str, spool_dir: str) -> dict[str, int]:
    """Replay every spooled run in ``spool_dir``; returns run id -> writes still pending (0 when synced).

    Trial runs first; a sweep's closing (``finish_sweep``) only once they are all in, so its front has them."""
    client = client_for(tracking_uri)
    paths = sorted(glob.glob(os.path.join(spool_dir, "*.jsonl")))
    closing = [path for path in paths if _closes_sweep(path)]
    left = {}
    for path in [p for p in paths if p not in closing] + closing:
        run_id = os.path.basename(path)[: -len(".jsonl")]
        recorder = Recorder(client, run_id, spool_dir)
        if path not in closing or not any(left.values()):
            recorder.flush()
        left[run_id] = recorder.pending()
    return left
