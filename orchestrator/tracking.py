"""MLflow client helpers: one parent run per sweep, one nested child run per trial.

Trials log from the Ray workers themselves (``MlflowClient`` over the tracking URI), so a remote cluster
needs no file system shared with the driver. Writes go through ``orchestrator.spool.Recorder``, which keeps
what an unreachable server does not take; reads and lookups live here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.parse
from typing import Any, Callable, Iterator, Mapping, TypeVar

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

log = logging.getLogger(__name__)
T = TypeVar("T")

TRIAL_ID_TAG = "bap.trial_id"
TRIAL_NAME_TAG = "bap.trial_name"
SWEEP_TAG = "bap.sweep"  # on the parent: the sweep's Tune directory, so a resumed sweep finds its parent run
COMMAND_TAG = "bap.command"  # on the parent: the command line that started the sweep, for its description
# MLflow 3's UI opens an experiment of this kind on its training runs, not on the GenAI (traces) view.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# On the parent: digests of the Tune files a resume may unpickle (orchestrator.resume); written by the driver only.
DIGESTS_TAG = "bap.sweep_digests"
# On the parent, one per trial folder (this prefix + its name): digests of its recent checkpoints' files; the same.
CHECKPOINT_DIGESTS_PREFIX = DIGESTS_TAG + "/"
PARETO_TAG = "pareto_optimal"
ERROR_TAG = "bap.error"  # on a FAILED run: the exception that ended it
STOPPED_TAG = "bap.stopped_early"  # on a KILLED run the scheduler stopped: which scheduler, at which epoch
RESUMED_TAG = "bap.resumed_from_epoch"  # on a trial run: the checkpoint epoch its latest resumed attempt started at
ERROR_TAG_LIMIT = 5000  # of its text: the first lines say enough
_PARAM_VALUE_LIMIT = 6000  # MLflow's limit on one param value
# MLflow's HTTP client retries a refused connection 7 times with exponential backoff before it raises: about
# 4 minutes per call (measured with mlflow 3.17 against a stopped server). The orchestrator's callers have a retry
# of their own (the spool, ``with_retries``, the end-of-sweep wait) or may skip a write (the live sweep page), so
# its processes fail at once instead, and an outage of the tracking server never stalls a trial or Tune's event
# loop. The timeout bounds a hung server. MLflow reads these per request, from the environment only.
FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def use_fail_fast_http() -> None:
    """For entry points and trial workers (a process-wide setting they opt in to): MLflow HTTP calls in this process
    raise at once when the server is unreachable. An explicit ``MLFLOW_HTTP_REQUEST_*`` setting is kept."""
    for key, value in FAIL_FAST_HTTP.items():
        os.environ.setdefault(key, value)


def client_for(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


SERVICE_TIMEOUT_S = 10.0  # one bounded attempt per service before anything is created


def check_mlflow(uri: str) -> None:
    """Raise ``ServiceUnavailable`` within seconds, naming the variable, the address and the fix, when the MLflow
    server at ``uri`` cannot be used (every entry point, before any run: an unreachable server used to mean
    minutes of silent retries, then a traceback). A local store is checked by validation."""
    from orchestrator.errors import ServiceUnavailable

    if not uri.startswith(("http://", "https://")):
        return
    url = urllib.parse.urlsplit(uri)
    try:
        # The socket bounds an address that drops packets; the request checks an MLflow server answers.
        socket.create_connection(((url.hostname or "").strip("[]") or "127.0.0.1",
                                  url.port or (443 if url.scheme == "https" else 80)), timeout=SERVICE_TIMEOUT_S).close()
        client_for(uri).search_experiments(max_results=1)
    except Exception as error:  # connection refused, DNS, timeout, HTTP error: all mean "not usable"
        raise ServiceUnavailable(f"error: MLflow at {uri} (MLFLOW_TRACKING_URI / mlflow.tracking_uri) is unreachable "
                                 f"({type(error).__name__}); start the server (e.g. `docker compose up mlflow`), fix "
                                 "the address, or unset it for a local sqlite:///mlflow.db") from None


# MLflow 3's server otherwise starts a pool of GenAI job-runner processes that tracking never uses.
UI_COMMAND = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri}"


# MLflow's address as a person's browser reaches it, where that differs from the tracking URI (the compose stack's
# containers reach http://mlflow:5000, a browser on the host http://127.0.0.1:5000).
PUBLIC_URL_ENV = "BAP_MLFLOW_PUBLIC_URL"


def ui_page(tracking_uri: str, page: str) -> str:
    """Where a person opens ``page`` (``/#/experiments/...``) of the MLflow UI: on a tracking server (at
    ``$BAP_MLFLOW_PUBLIC_URL`` when set), or after the command that serves a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return (os.environ.get(PUBLIC_URL_ENV) or tracking_uri).rstrip("/") + page
    return f"`{UI_COMMAND.format(uri=tracking_uri)}`, then http://127.0.0.1:5000{page}"


def run_page(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where a person opens ``run_id`` in the MLflow UI (``ui_page``)."""
    # MLflow 3.17 opens on its GenAI view unless told (it no longer reads the experiment's kind tag for that).
    return ui_page(tracking_uri, f"/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning")


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
    """The experiment's id, created when new; marked as a model-training experiment either way."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=local_artifact_root(client.tracking_uri),
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"budget.beta": "0.5", ...}`` for MLflow params (strings, MLflow's length limit)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = (json.dumps(value) if isinstance(value, (list, tuple)) else str(value))[:_PARAM_VALUE_LIMIT]
    return flat


def poll(attempt: Callable[[], T], timeout_s: float, interval_s: float = 2.0) -> T:
    """Call ``attempt`` until it returns something truthy or ``timeout_s`` has passed (it is called at least once);
    returns its last result. The one wait-and-try-again loop of the orchestrator."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = attempt()
        if result or time.monotonic() + interval_s > deadline:
            return result
        time.sleep(interval_s)


def with_retries(fn: Callable[[], Any], what: str, timeout_s: float = 120.0, interval_s: float = 2.0) -> Any:
    """Call ``fn`` until it succeeds or ``timeout_s`` passes (the server may be restarting)."""
    errors: list[Exception] = []

    def attempt() -> tuple | None:
        try:
            return (fn(),)  # a tuple: a result of None or [] is still a success
        except Exception as error:
            log.warning("%s failed (%s); retrying", what, type(error).__name__)
            errors.append(error)
            return None

    result = poll(attempt, timeout_s, interval_s)
    if result is None:
        raise RuntimeError(f"{what} failed for {timeout_s:.0f}s against MLflow: {errors[-1]}") from errors[-1]
    return result[0]


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
            if run.info.status != "FINISHED":  # a retried or resumed trial: running again, no stale error
                client.update_run(run.info.run_id, status="RUNNING")
                if ERROR_TAG in run.data.tags:
                    client.delete_tag(run.info.run_id, ERROR_TAG)
            return run.info.run_id
        run = client.create_run(experiment_id, run_name=trial_name, tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id, TRIAL_ID_TAG: trial_id, TRIAL_NAME_TAG: trial_name,
            MLFLOW_RUN_NAME: trial_name,
        })
        return run.info.run_id

    return with_retries(lookup, f"finding the MLflow run of trial {trial_id}")


# Runs per read when a sweep's runs are read in full (the closing, a resumed live page, the report): a run took
# about 250 KB of memory while its page was read (300 runs from a SQLite store), so pages of 1,000 made the closing
# of a 1,000-trial sweep the driver's largest memory use.
CHILD_RUNS_PAGE = 100


def iter_child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> Iterator:
    """Every child run of ``parent_run_id`` (or of any sweep in the experiment), read a page at a time."""
    query = f"tags.`{TRIAL_ID_TAG}` != ''"
    if parent_run_id:
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and " + query
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=CHILD_RUNS_PAGE,
                                  page_token=token)
        token = page.token
        yield from page
        del page  # not held while the next one is read
        if not token:
            return


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> list:
    """``iter_child_runs`` as a list."""
    return list(iter_child_runs(client, experiment_id, parent_run_id))
