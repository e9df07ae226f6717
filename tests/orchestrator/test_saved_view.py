"""Each sweep shares a "Pareto" view of MLflow's runs page: its trials' acc_mean against params_ratio (what MLflow
3.18 draws from it: docs/screenshots/pareto_view.png, taken by docs/screenshots.py in headless Chromium)."""

import json

from orchestrator.saved_view import VIEW_TAG_PREFIX, pareto_page, share_pareto_view


def test_a_sweep_shares_a_scatter_of_its_own_trials(store):
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    share_pareto_view(client, experiment_id, parent)
    view = json.loads(client.get_experiment(experiment_id).tags[f"{VIEW_TAG_PREFIX}pareto-{parent}"])
    (chart,) = view["compareRunCharts"]
    assert chart["type"] == "SCATTER" and chart["metricSectionId"] == view["compareRunSections"][0]["uuid"]
    assert (chart["xaxis"]["key"], chart["yaxis"]["key"]) == ("params_ratio", "acc_mean")
    assert view["searchFilter"] == f"tags.mlflow.parentRunId = '{parent}'"  # this sweep's trials, nothing else
    assert view["useGroupedValuesInCharts"] is False  # one point per trial, not per loss
    assert pareto_page("http://mlflow:5000", experiment_id, parent) == \
        f"http://mlflow:5000/#/experiments/{experiment_id}/runs?viewStateShareKey=pareto-{parent}&compareRunsMode=CHART"
