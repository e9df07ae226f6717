"""The Model Registry side of a sweep: the models of the front's runs registered under one name.

Apart from ``orchestrator.mlflow_model``, the model's own code, which loads without ``orchestrator``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from mlflow.entities import LoggedModelStatus

from orchestrator.mlflow_model import MODEL_NAME
from orchestrator.trial_keys import BACKBONE, BUDGET, DOMAIN_SET, METHOD

log = logging.getLogger(__name__)
REGISTRY_TAGS = (BUDGET, METHOD, BACKBONE, DOMAIN_SET)  # a version's tags: which configuration it is


def _model_source(client, run_id: str) -> tuple[str | None, str | None]:
    """(source URI, logged model id) of the run's newest READY model, else of its spooled folder; Nones if neither."""
    run = client.get_run(run_id)
    models = client.search_logged_models(  # a filter on status matches nothing in MLflow 3.17's SQL store
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}])
    ready = next((m for m in models if m.status == LoggedModelStatus.READY), None)
    # Its location, not models:/<id>: MLflow's SQL registry would resolve that through the global tracking URI.
    if ready is not None:
        return ready.artifact_location, ready.model_id
    # The root listing: one of the folder would also look for a logged model of that name, through the global URI.
    if any(f.path == MODEL_NAME and f.is_dir for f in client.list_artifacts(run_id)):
        return f"{run.info.artifact_uri}/{MODEL_NAME}", None
    return None, None


def register_front_models(client, table: Sequence[Mapping[str, Any]], name: str) -> list:
    """Register the model of every front run of ``table`` (``orchestrator.table.ParetoTable.rows`` with
    ``pareto_params``) as a version of ``name``, tagged with its budget, sharing, backbone and domain set; returns
    the new versions. A run registered under ``name`` before is skipped, so a repeated closing adds none."""
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    registered = {v.run_id for v in client.search_model_versions(f"name = '{name}'")}
    versions = []
    for row in table:
        if not row["pareto_params"] or row["run_id"] in registered:
            continue
        source, model_id = _model_source(client, row["run_id"])
        if source is None:
            log.warning("front run %s has no pyfunc model; not registered under %r", row["run_id"], name)
            continue
        versions.append(client.create_model_version(
            name, source, run_id=row["run_id"], tags={k: str(row[k]) for k in REGISTRY_TAGS}, model_id=model_id))
    return versions
