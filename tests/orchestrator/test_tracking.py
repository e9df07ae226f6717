"""The orchestrator's one wait-and-try-again loop (``poll``) and MLflow calls retried on it (``with_retries``)."""

import pytest

from orchestrator.tracking import PUBLIC_URL_ENV, poll, run_page, with_retries


def test_poll_stops_at_the_first_truthy_result_and_tries_once_without_time():
    answers = iter([0, [], "done", "never asked"])
    assert poll(lambda: next(answers), timeout_s=5, interval_s=0.001) == "done"
    calls = []
    assert poll(lambda: calls.append(1), timeout_s=0) is None and calls == [1]


def test_with_retries_returns_an_empty_result_without_retrying():
    calls = []
    assert with_retries(lambda: calls.append(1) or [], "reading", timeout_s=5, interval_s=0.001) == []
    assert calls == [1]


def test_with_retries_tries_again_then_names_what_failed():
    attempts = iter([ConnectionError("down"), "back"])

    def flaky():
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert with_retries(flaky, "reading", timeout_s=5, interval_s=0.001) == "back"
    with pytest.raises(RuntimeError, match="closing the sweep failed for 0s against MLflow: down"):
        with_retries(lambda: (_ for _ in ()).throw(ConnectionError("down")), "closing the sweep", timeout_s=0)


def test_the_printed_link_is_one_a_browser_on_the_host_can_open(monkeypatch):
    # In the compose stack the driver reaches MLflow as http://mlflow:5000, a name only containers resolve.
    monkeypatch.delenv(PUBLIC_URL_ENV, raising=False)
    assert run_page("http://mlflow:5000", "1", "abc").startswith("http://mlflow:5000/#/experiments/1/runs/abc")
    monkeypatch.setenv(PUBLIC_URL_ENV, "http://127.0.0.1:5000/")
    assert run_page("http://mlflow:5000", "1", "abc") == \
        "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning"
