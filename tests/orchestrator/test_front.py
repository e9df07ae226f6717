"""The front's records, publishing and table (orchestrator.front), against a real MLflow store."""

from __future__ import annotations

import gc
import json
import weakref

import pytest
from mlflow.entities import Metric, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from bap import metrics as M
from orchestrator.front import (FRONT_TABLE, collect_records, finish_sweep, format_table, hypervolume_by_sweep,
                                publish_front, read_sweep, summary_metrics)
from orchestrator.table import ParetoTable
from orchestrator.tracking import (CHILD_RUNS_PAGE, COMMAND_TAG, ERROR_TAG, PARETO_TAG, STOPPED_TAG, TRIAL_ID_TAG,
                                   find_or_create_child)
from tests.orchestrator.helpers import tag_trial


def _finished(client, experiment_id, parent, trial_id, acc, params_ratio, budget):
    run_id = find_or_create_child(client, experiment_id, parent, trial_id, trial_id)
    for key, value in ((M.ACC_MEAN, acc), (M.PARAMS_TOTAL, 1000.0 * params_ratio), (M.PARAMS_RATIO, params_ratio),
                       (M.MACS_RATIO, params_ratio)):
        client.log_metric(run_id, key, value)
    tag_trial(client, run_id, budget=budget)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_records_are_the_finished_trials_of_one_sweep_or_of_all(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    other = client.create_run(experiment_id).info.run_id
    elsewhere = _finished(client, experiment_id, other, "t9", 60.0, 0.4, 0.4)
    assert [r["run_id"] for r in collect_records(client, experiment_id, parent)] == [done]
    assert {r["run_id"] for r in collect_records(client, experiment_id)} == {done, elsewhere}
    (record,) = collect_records(client, experiment_id, other)
    assert (record[M.ACC_MEAN], record[M.PARAMS_RATIO], record["budget"]) == (60.0, 0.4, 0.4)


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_reading_a_sweep_keeps_one_page_of_runs_alive_at_a_time(store):
    # The closing reads every run of the sweep: held all at once, 1,000 runs were the driver's largest memory use.
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    n = 2 * CHILD_RUNS_PAGE + 1
    for i in range(n):
        tags = [RunTag(MLFLOW_PARENT_RUN_ID, parent), RunTag(TRIAL_ID_TAG, f"t{i}")]
        run_id = client.create_run(experiment_id, tags={t.key: t.value for t in tags}).info.run_id
        if i % 2:  # every other trial finished; every third stopped early; one failed
            tag_trial(client, run_id, seed=i)
            client.log_batch(run_id, metrics=[Metric(M.PARAMS_TOTAL, 1.0, 0, 0), Metric(M.ACC_MEAN, 50.0, 0, 0)])
            client.set_terminated(run_id, "FINISHED")
        if i % 3 == 0:
            client.set_tag(run_id, STOPPED_TAG, "asha at epoch 1")
        if i == 4:
            client.set_terminated(run_id, "FAILED")
    alive, pages = [], []
    search_runs = client.search_runs

    def tracked(*args, **kwargs):
        gc.collect()
        pages.append(sum(ref() is not None for ref in alive))  # runs of earlier pages still held (the caller's
        # loop variable holds the last one)
        page = search_runs(*args, **kwargs)
        alive.extend(weakref.ref(run) for run in page)
        return page

    client.search_runs = tracked
    sweep = read_sweep(client, experiment_id, parent)
    assert len(pages) == 3 and max(pages) <= 1
    assert (len(sweep.records), sweep.failed, sweep.stopped) == (n // 2, 1, len(range(0, n, 3)))
    assert len(sweep.running) == n - n // 2 - 1 and "t0" in sweep.running.values()


def test_publishing_tags_exactly_the_front_and_logs_its_files(store):
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    best = _finished(client, experiment_id, parent, "a", 70.0, 0.5, 0.5)
    smaller = _finished(client, experiment_id, parent, "b", 60.0, 0.25, 0.25)
    dominated = _finished(client, experiment_id, parent, "c", 55.0, 0.5, 0.75)  # less accurate, no smaller
    table = ParetoTable(collect_records(client, experiment_id, parent))
    publish_front(client, parent, table)
    assert {row["run_id"]: row["pareto_params"] for row in table.rows} == {best: True, smaller: True, dominated: False}
    tags = {run: client.get_run(run).data.tags[PARETO_TAG] for run in (best, smaller, dominated)}
    assert tags == {best: "true", smaller: "true", dominated: "false"}
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent)}
    head, rule, *rows, footnote = format_table(table).splitlines()
    assert len(rows) == len(table.rows) and footnote.startswith("* on the accuracy-vs-parameters Pareto front")
    assert [row.startswith("* ") for row in rows] == [row["pareto_params"] for row in table.rows]


def test_finish_sweep_kills_unfinished_trials_publishes_the_front_and_closes_the_parent(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    crashed = find_or_create_child(client, experiment_id, parent, "t2", "crashed")  # its worker died
    table = finish_sweep(client, experiment_id, parent, "KILLED", {"t2": "RayActorError: the actor died"})
    assert client.get_run(crashed).info.status == "FAILED"
    assert client.get_run(crashed).data.tags[ERROR_TAG] == "RayActorError: the actor died"
    assert [row["run_id"] for row in table.rows] == [done]
    assert client.get_run(unfinished).info.status == "KILLED"
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(done).data.tags[PARETO_TAG] == "true"
    assert client.get_run(parent).info.status == "KILLED"
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent)}


def _record(run_id, acc, ratio, budget, domain_set="all", sharing="union", seed=0, heavy=False):
    return {"run_id": run_id, "domain_set": domain_set, "backbone": "resnet26", "sharing": sharing, "budget": budget,
            "seed": seed, M.ACC_MEAN: acc, M.PARAMS_TOTAL: 1000.0 * ratio, M.PARAMS_RATIO: ratio,
            M.MACS_RATIO: ratio, M.PROJECTION_HEAVY: heavy}


def test_summary_counts_trials_and_measures_each_groups_front_on_configuration_means():
    records = [
        _record("a0", 70.0, 0.5, 0.5, seed=0), _record("a1", 60.0, 0.5, 0.5, seed=1),  # one point: 65 at 0.5
        _record("b", 50.0, 0.25, 0.25),
        _record("c", 55.0, 0.75, 0.75),  # dominated by the 0.5 point
        _record("h", 99.0, 0.1, 0.1, heavy=True),  # heavily projected: never on the front
        _record("d", 40.0, 0.5, 0.5, domain_set="dtd+svhn"),
    ]
    m = summary_metrics(ParetoTable(records), failed=2, stopped=3)
    assert (m[M.TRIALS_FINISHED], m[M.TRIALS_FAILED], m[M.TRIALS_STOPPED]) == (6, 2, 3)
    assert m[M.FRONT_SIZE] == 3  # (b, the a-mean) in all, d in dtd+svhn
    # Against the reference (cost 1.5, accuracy 0): steps at 0.25 (50) and 0.5 (65).
    assert m[M.hypervolume_key("resnet26/all")] == pytest.approx((0.5 - 0.25) * 50 + (1.5 - 0.5) * 65)
    assert m[M.hypervolume_key("resnet26/dtd.svhn")] == pytest.approx((1.5 - 0.5) * 40)
    assert m[M.best_acc_key("b0.5")] == pytest.approx(65.0)  # the configuration mean, not the lucky seed
    assert M.best_acc_key("b0.1") not in m and m[M.best_acc_key("b0.75")] == 55.0


class CountingClient:
    """A real MLflow client that counts the tags it sets."""

    def __init__(self, client):
        self.client, self.tags = client, []

    def set_tag(self, run_id, key, value):
        self.tags.append((run_id, key, value))
        self.client.set_tag(run_id, key, value)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_republishing_retags_only_the_trials_whose_flag_changed(store):
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    first = _finished(client, experiment_id, parent, "a", 60.0, 0.5, 0.5)
    counting = CountingClient(client)
    tagged = {}
    publish_front(counting, parent, ParetoTable(collect_records(client, experiment_id, parent)), tagged)
    assert [(r, v) for r, k, v in counting.tags if k == PARETO_TAG] == [(first, "true")]
    better = _finished(client, experiment_id, parent, "b", 70.0, 0.5, 0.75)  # pushes the first off the front
    _finished(client, experiment_id, parent, "c", 10.0, 1.0, 1.0)  # joins off the front
    counting.tags.clear()
    publish_front(counting, parent, ParetoTable(collect_records(client, experiment_id, parent)), tagged)
    changed = sorted((r, v) for r, k, v in counting.tags if k == PARETO_TAG)
    assert len(changed) == 3 and (first, "false") in changed and (better, "true") in changed
    counting.tags.clear()
    publish_front(counting, parent, ParetoTable(collect_records(client, experiment_id, parent)), tagged)
    assert [t for t in counting.tags if t[1] == PARETO_TAG] == []  # nothing changed, nothing written
    table = json.loads(open(client.download_artifacts(parent, FRONT_TABLE, store_dir(uri))).read())
    assert [row[3] for row in table["data"]] == [0.75]  # the front now (b alone), not appended to the last ones


def test_the_closed_sweep_page_has_its_summary_front_table_and_how_to_resume(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    client.set_tag(parent, COMMAND_TAG, "python -m orchestrator.sweep budgets=0.5")
    finish_sweep(client, experiment_id, parent, "FINISHED")
    run = client.get_run(parent)
    assert run.data.metrics[M.TRIALS_FINISHED] == 1 and run.data.metrics[M.FRONT_SIZE] == 1
    assert [m.step for m in client.get_metric_history(parent, M.TRIALS_FINISHED)] == [1]
    note = run.data.tags[MLFLOW_RUN_NOTE]
    assert "| domain set | backbone |" in note and "| all | resnet26 | union |" in note
    assert "`python -m orchestrator.sweep budgets=0.5 resume=/runs/exp_1`" in note
    assert f"python -m orchestrator.report experiment=exp mlflow.tracking_uri={uri}" in note
    table = json.loads(open(client.download_artifacts(parent, FRONT_TABLE, str(store_dir(uri)))).read())
    assert table["columns"][:3] == ["domain_set", "backbone", "sharing"] and len(table["data"]) == 1


def store_dir(uri):
    return uri[len("sqlite:///"):].rsplit("/", 1)[0]


def test_each_sweeps_hypervolume_is_its_own_fronts_against_the_same_reference():
    first = [dict(_record("a", 60.0, 0.5, 0.5), sweep="s1"), dict(_record("b", 50.0, 0.25, 0.25), sweep="s1")]
    second = [dict(_record("c", 70.0, 0.5, 0.5), sweep="s2")]
    rows = {(r["sweep"], r["group"]): r for r in hypervolume_by_sweep(first + second)}
    assert set(rows) == {("s1", "resnet26/all"), ("s2", "resnet26/all")}
    own = summary_metrics(ParetoTable(first), 0, 0)[M.hypervolume_key("resnet26/all")]
    assert rows["s1", "resnet26/all"]["hypervolume"] == own
    assert rows["s2", "resnet26/all"]["hypervolume"] == pytest.approx((1.5 - 0.5) * 70.0)
    assert rows["s1", "resnet26/all"]["trials"] == 2
