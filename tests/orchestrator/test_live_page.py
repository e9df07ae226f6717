"""The sweep's live page (orchestrator.live_page.SweepProgress), driven by Tune's callbacks with scripted trials."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from bap import metrics as M
from benchmarks.large_sweep import PUBLISH_LINE
from orchestrator.live_page import SweepProgress
from orchestrator.tracking import PARETO_TAG, STOPPED_TAG, find_or_create_child
from tests.orchestrator.helpers import closed_port_uri, tag_trial


def trial(run_id: str | None):
    """A trial as Tune hands it to callbacks: its last result final (with its run), or an epoch's."""
    return SimpleNamespace(last_result={"mlflow_run_id": run_id, "final": 1.0} if run_id else {"val/acc_mean": 1.0})


def test_each_finished_trial_is_read_once_and_updates_the_summary_and_front(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    progress = SweepProgress(uri, experiment_id, parent, publish_every_s=0)
    progress.on_trial_complete(0, [], trial(done))
    progress.on_trial_complete(0, [], trial(None))  # stopped before its final report: not a finished trial
    progress.on_trial_error(0, [], trial(None))
    history = client.get_metric_history(parent, M.TRIALS_FINISHED)
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (1, 1.0)]
    assert client.get_run(parent).data.metrics[M.TRIALS_FAILED] == 1
    assert client.get_run(done).data.tags[PARETO_TAG] == "true"
    assert "pareto_params.png" in {a.path for a in client.list_artifacts(parent)}


def test_publishing_waits_for_its_interval_and_happens_on_a_later_step(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    progress = SweepProgress(uri, experiment_id, parent, publish_every_s=3600)
    progress.on_trial_complete(0, [], trial(done))  # the first update publishes at once
    second = find_or_create_child(client, experiment_id, parent, "t2", "second")
    for key, value in ((M.ACC_MEAN, 70.0), (M.PARAMS_TOTAL, 1000.0), (M.PARAMS_RATIO, 0.5), (M.MACS_RATIO, 0.5)):
        client.log_metric(second, key, value)
    tag_trial(client, second, budget=0.75)
    client.set_terminated(second, "FINISHED")
    progress.on_trial_complete(0, [], trial(second))
    assert client.get_run(parent).data.metrics[M.TRIALS_FINISHED] == 2  # the summary at once
    assert PARETO_TAG not in client.get_run(second).data.tags  # the front waits for its interval
    progress._next_publish = 0.0
    progress.on_step_end(0, [])
    assert client.get_run(second).data.tags[PARETO_TAG] == "true"
    assert client.get_run(done).data.tags[PARETO_TAG] == "false"


def test_an_unreachable_server_skips_the_update_without_stopping_the_sweep(caplog, monkeypatch):
    # An entry point run in-process by an earlier test (Hydra's logging setup) may have disabled the logger.
    monkeypatch.setattr(logging.getLogger("orchestrator.live_page"), "disabled", False)
    progress = SweepProgress(closed_port_uri(), "0", "parent", publish_every_s=0)
    with caplog.at_level(logging.WARNING):
        progress.on_trial_complete(0, [], trial("run"))
        progress.on_step_end(0, [])
    assert "could not update the sweep's page in MLflow yet" in caplog.text


def test_a_failed_trial_counts_once_though_its_run_is_already_failed_in_mlflow(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    earlier = find_or_create_child(client, experiment_id, parent, "t8", "earlier")  # failed before a resume
    client.set_terminated(earlier, "FAILED")
    progress = SweepProgress(uri, experiment_id, parent, publish_every_s=3600)
    progress.setup()  # Tune calls it before any trial event
    client.set_terminated(unfinished, "FAILED")  # the trainable marks its run FAILED, then Tune reports the error
    progress.on_trial_error(0, [], trial(None))
    assert client.get_run(parent).data.metrics[M.TRIALS_FAILED] == 2


def test_a_trial_the_scheduler_stops_is_tagged_and_counted_stopped_never_finished(store, two_trial_sweep):
    uri, client, experiment_id = store
    parent, done, unfinished = two_trial_sweep
    progress = SweepProgress(uri, experiment_id, parent, scheduler="pareto", publish_every_s=0)
    epoch = {"epoch": 1, M.VAL_ACC_MEAN: 30.0, "mlflow_run_id": unfinished}
    progress.on_trial_result(0, [], trial(None), {**epoch})  # an ordinary epoch: nothing to record
    assert STOPPED_TAG not in client.get_run(unfinished).data.tags
    stopped = {**epoch, "epoch": 2, "done": True}  # Tune marks the result the scheduler stopped on done
    progress.on_trial_result(0, [], SimpleNamespace(last_result=stopped), stopped)
    progress.on_trial_complete(0, [], SimpleNamespace(last_result=stopped))
    progress.on_trial_complete(0, [], trial(done))
    assert client.get_run(unfinished).data.tags[STOPPED_TAG] == "pareto at epoch 2"
    metrics = client.get_run(parent).data.metrics
    assert (metrics[M.TRIALS_FINISHED], metrics[M.TRIALS_STOPPED], metrics[M.TRIALS_FAILED]) == (1, 1, 0)
    # A resumed sweep's page counts what MLflow already has.
    again = SweepProgress(uri, experiment_id, parent, scheduler="pareto", publish_every_s=0)
    again.setup()
    assert again._stopped == 1


def test_each_publish_logs_its_time_as_benchmarks_large_sweep_reads_it(store, two_trial_sweep, caplog, monkeypatch):
    # An earlier in-process sweep's logging set-up may have disabled the module's logger; a driver's has it on.
    monkeypatch.setattr(logging.getLogger("orchestrator.live_page"), "disabled", False)
    uri, client, experiment_id = store
    parent, done, _ = two_trial_sweep
    progress = SweepProgress(uri, experiment_id, parent, publish_every_s=0)
    with caplog.at_level(logging.INFO, logger="orchestrator.live_page"):
        progress.on_trial_complete(0, [], trial(done))
    published = [float(s) for s in PUBLISH_LINE.findall(caplog.text)]
    assert len(published) == 1 and published[0] >= 0
