"""The durable spool: every MLflow write of a run goes through ``Recorder``, and nothing is lost.

When the tracking server cannot be reached a write is appended to the run's spool file and replayed, in order,
on the next write that succeeds or by ``python -m orchestrator.report sync=true``; training never waits on MLflow
(every entry point and trial worker opts in to ``orchestrator.tracking.use_fail_fast_http``).

A spool folder holds the runs of one tracking store and experiment (``scoped``): a run of another store can never
be replayed here, so it must never sit beside this one's and hold its closing back. A sweep's closing is replayed
by the callback its caller passes (``orchestrator.front.finish_sweep``): this module stays free of the front and
of the sweep's config, so a trial worker imports neither.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import time
from typing import Callable, Iterable, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bap.atomic import atomic_path
from orchestrator.tracking import DIGESTS_TAG, client_for, iter_child_runs, poll

log = logging.getLogger(__name__)

DEFAULT_SPOOL = os.path.join("runs", "mlflow_spool")  # orchestrator.train's (and a sweep's with a URI storage)
FINISH_SWEEP = "finish_sweep"
# (client, experiment id, parent run id, status, errors): replays a sweep's closing (orchestrator.front.finish_sweep).
FinishSweep = Callable[..., object]
# MLflow's limits on one log_batch call.
_MAX_PARAMS, _MAX_METRICS = 100, 1000
# While writes wait in a spool, a new one joins them without calling MLflow again sooner than this: an outage
# costs each write an append, not a failed request and a rewrite of the whole spool.
RETRY_EVERY_S = 5.0


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def scoped(root: str, tracking_uri: str, experiment: str) -> str:
    """The spool folder under ``root`` of the runs of ``experiment`` in the store at ``tracking_uri``: the
    experiment's name (readable) and a digest of both (distinct)."""
    key = hashlib.sha256(f"{tracking_uri}\n{experiment}".encode()).hexdigest()[:12]
    return os.path.join(root, f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', experiment)[:40]}-{key}")


class Recorder:
    """Writes to one MLflow run; spools what the server does not take and replays it in order later.
    ``finish_sweep`` replays a sweep's closing (needed on a sweep's parent run only)."""

    def __init__(self, client: MlflowClient, run_id: str, spool_dir: str,
                 finish_sweep: FinishSweep | None = None) -> None:
        self.client, self.run_id, self._finish_sweep = client, run_id, finish_sweep
        os.makedirs(spool_dir, exist_ok=True)
        self.spool_path = os.path.join(spool_dir, f"{run_id}.jsonl")
        self._failed_at: float | None = None
        self.last_error = ""  # why the last replay stopped, for the user

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
            self.last_error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
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
            tags = [RunTag(k, v) for k, v in item["tags"].items() if not k.startswith(DIGESTS_TAG)]
            self.client.log_batch(self.run_id, tags=tags, synchronous=True)
        elif op == "artifact":
            self.client.log_artifact(self.run_id, item["path"], item["artifact_path"])
        elif op == "terminate":
            self.client.set_terminated(self.run_id, item["status"])
        elif op == FINISH_SWEEP:
            if self._finish_sweep is None:
                raise RuntimeError("a sweep's closing is replayed by orchestrator.sweep or orchestrator.report only")
            self._finish_sweep(self.client, item["experiment_id"], self.run_id, item["status"], item["errors"])
        else:
            raise ValueError(f"unknown spool entry {op!r} in {self.spool_path}")


def _closing(path: str) -> dict | None:
    """The closing entry (``finish_sweep``) of a spool file, if it holds one."""
    with open(path) as f:
        entries = [json.loads(line) for line in f if FINISH_SWEEP in line]
    return next((e for e in entries if e.get("op") == FINISH_SWEEP), None)


def sync_spools(tracking_uri: str, spool_dir: str, finish_sweep: FinishSweep | None = None,
                reasons: dict[str, str] | None = None) -> dict[str, int]:
    """Replay every spooled run in ``spool_dir``; returns run id -> writes still pending (0 when synced), and
    fills ``reasons`` (when given) with run id -> why the replay of a pending run stopped.

    Trial runs first; a sweep's closing (replayed by ``finish_sweep``) once its own trials' spools are in, so its
    front has them: a pending run of another sweep never holds it back."""
    client = client_for(tracking_uri)
    paths = sorted(glob.glob(os.path.join(spool_dir, "*.jsonl")))
    closings = {path: entry for path in paths if (entry := _closing(path)) is not None}
    left: dict[str, int] = {}
    reasons = {} if reasons is None else reasons
    for path in [p for p in paths if p not in closings] + list(closings):
        run_id = os.path.basename(path)[: -len(".jsonl")]
        recorder = Recorder(client, run_id, spool_dir, finish_sweep)
        waiting = _own_pending(client, closings.get(path), run_id, left)
        if waiting:
            reasons[run_id] = f"waits for its trial run(s) {', '.join(sorted(waiting))}"
        else:
            recorder.flush()
            if recorder.pending():
                reasons[run_id] = recorder.last_error
        left[run_id] = recorder.pending()
    return left


def _own_pending(client: MlflowClient, closing: dict | None, run_id: str, left: Mapping[str, int]) -> set[str]:
    """For a sweep's closing: which of its own trial runs still have writes pending (all of them, as far as known,
    when MLflow cannot say)."""
    pending = {run for run, n in left.items() if n}
    if closing is None or not pending:
        return set()
    try:
        return pending & {run.info.run_id for run in iter_child_runs(client, closing["experiment_id"], run_id)}
    except Exception:  # MLflow down: the closing could not be replayed either
        return pending
