"""MLflow records of a sweep: one parent run per sweep, one nested child run per trial, nothing lost.

Trials log from the Ray workers themselves (``MlflowClient`` over the tracking URI), so a remote cluster
needs no file system shared with the driver. Every write goes through ``Recorder``: when the tracking server
cannot be reached the write is appended to a local spool file and replayed, in order, on the next write that
succeeds or by ``python -m orchestrator.report --sync``; training never waits on MLflow (see ``fail_fast``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

log = logging.getLogger(__name__)

TRIAL_ID_TAG = "bap.trial_id"
TRIAL_NAME_TAG = "bap.trial_name"
SWEEP_TAG = "bap.sweep"  # on the parent: the sweep's Tune directory, so a resumed sweep finds its parent run
PARETO_TAG = "pareto_optimal"
# MLflow's limits on one log_batch call.
_MAX_PARAMS, _MAX_METRICS = 100, 1000
_PARAM_VALUE_LIMIT = 6000
# MLflow's HTTP client retries a refused connection 7 times with exponential backoff before it raises: about
# 4 minutes per call (measured with mlflow 3.17 against a stopped server). Callers with a retry of their own
# (the spool, ``with_retries``) or that may skip a write (the Pareto callback) fail at once instead, so an
# outage of the tracking server never stalls a trial or Tune's event loop. The timeout bounds a hung server.
_FAIL_FAST_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """MLflow HTTP calls inside this block raise at once when the server is unreachable (read per request by
    ``mlflow.utils.rest_utils.http_request``); an explicit ``MLFLOW_HTTP_REQUEST_*`` setting is kept."""
    saved = {key: os.environ.get(key) for key in _FAIL_FAST_ENV}
    for key, value in _FAIL_FAST_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client_for(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def local_artifact_root(tracking_uri: str) -> str | None:
    """Absolute artifact location for local stores; None lets a tracking server choose (proxied artifacts)."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    if tracking_uri.startswith("sqlite:///"):
        base = os.path.dirname(tracking_uri[len("sqlite:///"):])
    else:
        base = tracking_uri.replace("file://", "")
    return "file://" + os.path.join(os.path.abspath(base or "."), "mlartifacts")


def ensure_experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=local_artifact_root(client.tracking_uri))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"budget.budget": "0.5", ...}`` for MLflow params (strings, MLflow's length limit)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = (json.dumps(value) if isinstance(value, (list, tuple)) else str(value))[:_PARAM_VALUE_LIMIT]
    return flat


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Recorder:
    """Writes to one MLflow run; spools what the server does not take and replays it in order later."""

    def __init__(self, client: MlflowClient, run_id: str, spool_dir: str) -> None:
        self.client, self.run_id = client, run_id
        os.makedirs(spool_dir, exist_ok=True)
        self.spool_path = os.path.join(spool_dir, f"{run_id}.jsonl")

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

    # ---- spool ------------------------------------------------------------------------------------------------
    def pending(self) -> int:
        if not os.path.exists(self.spool_path):
            return 0
        with open(self.spool_path) as f:
            return sum(1 for line in f if line.strip())

    def flush(self, timeout_s: float = 0.0, interval_s: float = 2.0) -> bool:
        """Replay the spool, trying again for up to ``timeout_s``; True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        while not self._write(None):
            if time.monotonic() + interval_s > deadline:
                return False
            time.sleep(interval_s)
        return True

    def _write(self, entry: dict | None) -> bool:
        queue = self._read_spool()
        if entry is not None:
            queue.append(entry)
        done = 0
        try:
            with fail_fast():
                for item in queue:
                    self._apply(item)
                    done += 1
        except Exception as error:  # any transport or server error: keep the rest for later
            log.warning("MLflow unreachable for run %s (%s); %d write(s) kept in %s", self.run_id,
                        type(error).__name__, len(queue) - done, self.spool_path)
        self._store_spool(queue[done:])
        return done == len(queue)

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
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.spool_path))
        with os.fdopen(fd, "w") as f:
            f.writelines(json.dumps(item) + "\n" for item in remaining)
        os.replace(tmp, self.spool_path)

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
            tags = [RunTag(k, v) for k, v in item["tags"].items()]
            self.client.log_batch(self.run_id, tags=tags, synchronous=True)
        elif op == "artifact":
            self.client.log_artifact(self.run_id, item["path"], item["artifact_path"])
        elif op == "terminate":
            self.client.set_terminated(self.run_id, item["status"])
        else:
            raise ValueError(f"unknown spool entry {op!r} in {self.spool_path}")


def sync_spools(tracking_uri: str, spool_dir: str) -> dict[str, int]:
    """Replay every spooled run in ``spool_dir``; returns run id -> writes still pending (0 when synced)."""
    client = client_for(tracking_uri)
    left = {}
    for path in sorted(glob.glob(os.path.join(spool_dir, "*.jsonl"))):
        run_id = os.path.basename(path)[: -len(".jsonl")]
        recorder = Recorder(client, run_id, spool_dir)
        recorder.flush()
        left[run_id] = recorder.pending()
    return left


def with_retries(fn: Callable[[], Any], what: str, timeout_s: float = 120.0, interval_s: float = 2.0) -> Any:
    """Call ``fn`` until it succeeds or ``timeout_s`` passes (the server may be restarting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with fail_fast():
                return fn()
        except Exception as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} failed for {timeout_s:.0f}s against MLflow: {error}") from error
            log.warning("%s failed (%s); retrying", what, type(error).__name__)
            time.sleep(interval_s)


def find_or_create_child(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str,
                         trial_name: str) -> str:
    """The child run of ``trial_id``: created once, found again when Tune retries or restores the trial."""
    def lookup() -> str:
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
            max_results=1,
        )
        if found:
            run = found[0]
            if run.info.status != "FINISHED":
                client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
        run = client.create_run(experiment_id, run_name=trial_name, tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id, TRIAL_ID_TAG: trial_id, TRIAL_NAME_TAG: trial_name,
            MLFLOW_RUN_NAME: trial_name,
        })
        return run.info.run_id

    return with_retries(lookup, f"finding the MLflow run of trial {trial_id}")


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> list:
    """Every child run of ``parent_run_id`` (or of any sweep in the experiment)."""
    query = f"tags.`{TRIAL_ID_TAG}` != ''"
    if parent_run_id:
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and " + query
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
