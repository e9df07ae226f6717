"""Ctrl-C or SIGTERM during a sweep's fit asks Tune to stop (SIGUSR1) once and is remembered; a second one raises."""

import os
import signal

import pytest

from orchestrator.interrupts import environ, graceful_stop


def test_the_first_stop_signal_asks_tune_to_stop_and_the_second_raises(monkeypatch):
    asked = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: asked.append(signum))  # Tune's stop, here
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        with graceful_stop() as stopped:
            assert not stopped() and os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
            signal.raise_signal(signal.SIGTERM)
            assert stopped() and asked == [signal.SIGUSR1]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert {s: signal.getsignal(s) for s in before} == before  # the driver's own handlers are back
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_environ_restores_what_was_there(monkeypatch):
    monkeypatch.setenv("BAP_TEST_SET", "old")
    monkeypatch.delenv("BAP_TEST_UNSET", raising=False)
    with environ({"BAP_TEST_SET": "new", "BAP_TEST_UNSET": "1"}):
        assert os.environ["BAP_TEST_SET"] == "new" and os.environ["BAP_TEST_UNSET"] == "1"
    assert os.environ["BAP_TEST_SET"] == "old" and "BAP_TEST_UNSET" not in os.environ
