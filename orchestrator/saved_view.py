"""A sweep's "Pareto" view in MLflow's runs page: the scatter of its trials, accuracy against size, one click away.

MLflow 3.15+ shares a view of the runs page through an experiment tag ``mlflow.sharedViewState.<id>`` (the page's
charts, filter and grouping as JSON) opened by ``?viewStateShareKey=<id>``. Each sweep gets one: its trial runs
(filtered by parent), grouped by sharing loss with every trial drawn on its own, and one scatter chart, ``acc_mean``
against ``params_ratio``. MLflow draws the points; the front itself is the parent run's ``pareto_params.png``.
Checked in headless Chromium against MLflow 3.18 (docs/screenshots/pareto_view.png).
"""

from __future__ import annotations

import json

from bap import metrics as M
from orchestrator.tracking import ui_page

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
_SECTION = "bap-pareto"


def view_id(parent_run_id: str) -> str:
    return f"pareto-{parent_run_id}"


def pareto_view(parent_run_id: str) -> dict:
    """The runs page's state the view restores (the keys MLflow's UI reads from a shared view)."""
    return {
        "compareRunSections": [{"uuid": _SECTION, "name": "Pareto", "display": True, "isReordered": False}],
        "compareRunCharts": [{"uuid": f"{_SECTION}-scatter", "type": "SCATTER", "metricSectionId": _SECTION,
                              "runsCountToCompare": 1000, "deleted": False, "isGenerated": False,
                              "xaxis": {"key": M.PARAMS_RATIO, "type": "METRIC"},
                              "yaxis": {"key": M.ACC_MEAN, "type": "METRIC"}}],
        # Trial runs are nested under the parent, and a collapsed parent charts nothing: the filter lists the
        # trials, grouped by loss, each drawn as its own point.
        "searchFilter": f"tags.mlflow.parentRunId = '{parent_run_id}'",
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "sharing"}]},
        "useGroupedValuesInCharts": False,
        "hideEmptyCharts": False,
        # MLflow adds a section per metric group after ours; without this it sorts them and "Pareto" sinks.
        "isAccordionReordered": True,
    }


def share_pareto_view(client, experiment_id: str, parent_run_id: str) -> None:
    """Record the sweep's view on its experiment."""
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + view_id(parent_run_id),
                              json.dumps(pareto_view(parent_run_id), separators=(",", ":")))


def pareto_page(tracking_uri: str, experiment_id: str, parent_run_id: str) -> str:
    """Where a person opens the sweep's view (``tracking.ui_page``)."""
    return ui_page(tracking_uri, f"/#/experiments/{experiment_id}/runs?viewStateShareKey={view_id(parent_run_id)}"
                                 "&compareRunsMode=CHART")
