"""The front's records, publishing and table (orchestrator.front), against a real MLflow store."""

from __future__ import annotations

from bap import metrics as M
from orchestrator.front import collect_records, finish_sweep, format_table, publish_front
from orchestrator.tracking import ERROR_TAG, PARETO_TAG, find_or_create_child


def _finished(client, experiment_id, parent, trial_id, acc, params_ratio, budget):
    run_id = find_or_create_child(client, experiment_id, parent, trial_id, trial_id)
    for key, value in ((M.ACC_MEAN, acc), (M.PARAMS_TOTAL, 1000.0 * params_ratio), (M.PARAMS_RATIO, params_ratio),
                       (M.MACS_RATIO, params_ratio)):
        client.log_metric(run_id, key, value)
    for key, value in (("budget", str(budget)), ("backbone", "resnet26"), ("sharing", "union")):
        client.set_tag(run_id, key, value)
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


def test_publishing_tags_exactly_the_front_and_logs_its_files(store):
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id).info.run_id
    best = _finished(client, experiment_id, parent, "a", 70.0, 0.5, 0.5)
    smaller = _finished(client, experiment_id, parent, "b", 60.0, 0.25, 0.25)
    dominated = _finished(client, experiment_id, parent, "c", 55.0, 0.5, 0.75)  # less accurate, no smaller
    table = publish_front(client, parent, collect_records(client, experiment_id, parent))
    assert {row["run_id"]: row["pareto_params"] for row in table} == {best: True, smaller: True, dominated: False}
    tags = {run: client.get_run(run).data.tags[PARETO_TAG] for run in (best, smaller, dominated)}
    assert tags == {best: "true", smaller: "true", dominated: "false"}
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent)}
    head, rule, *rows, footnote = format_table(table).splitlines()
    assert len(rows) == len(table) and footnote.startswith("* on the accuracy-vs-parameters Pareto front")
    assert [row.startswith("* ") for row in rows] == [row["pareto_params"] for row in table]


def test_finish_sweep_kills_unfinished_trials_publishes_the_front_and_closes_the_parent(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    crashed = find_or_create_child(client, experiment_id, parent, "t2", "crashed")  # its worker died
    table = finish_sweep(client, experiment_id, parent, "KILLED", {"t2": "RayActorError: the actor died"})
    assert client.get_run(crashed).info.status == "FAILED"
    assert client.get_run(crashed).data.tags[ERROR_TAG] == "RayActorError: the actor died"
    assert [row["run_id"] for row in table] == [done]
    assert client.get_run(unfinished).info.status == "KILLED"
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(done).data.tags[PARETO_TAG] == "true"
    assert client.get_run(parent).info.status == "KILLED"
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent)}
