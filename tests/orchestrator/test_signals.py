"""Ctrl-C and SIGTERM at every phase of a sweep end in a true state and a message (the signal during Tune's fit is
tests/orchestrator/test_sweep_e2e.py's Ctrl-C test)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from orchestrator.tracking import SWEEP_TAG
from tests.orchestrator.test_sweep_e2e import TINY, client_and_experiment, start

pytestmark = pytest.mark.slow


class Lines:
    """A driver's stderr, read as it comes."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self.lines.append(None)
            self._seen.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> bool:
        """True once a line holds ``text``; False when the stream ended or ``timeout_s`` passed without one."""
        def found() -> bool:
            return any(text in line for line in self.lines if line)

        with self._seen:
            self._seen.wait_for(lambda: found() or None in self.lines, timeout_s)
            return found()

    def ended(self, timeout_s: float) -> None:
        with self._seen:
            self._seen.wait_for(lambda: None in self.lines, timeout_s)

    def text(self) -> str:
        return "".join(line for line in self.lines if line)


def _driver(args, tmp_path):
    driver = start("orchestrator.sweep", args, tmp_path)
    return driver, Lines(driver.stderr)


def _sigterm_once(driver, err, line: str, wait_s: float, exit_s: float) -> None:
    """SIGTERM the driver once ``line`` is on its stderr, then wait for it to exit (killed if it hangs)."""
    try:
        assert err.wait_for(line, wait_s), err.text()[-3000:]
        os.kill(driver.pid, signal.SIGTERM)
        driver.wait(timeout=exit_s)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    err.ended(10)


def test_sigterm_before_the_sweep_started_says_so_without_a_traceback(tmp_path):
    # During the pretraining of the backbone (model.weights=embedded, cache empty): before Ray and any MLflow run.
    driver, err = _driver(["budgets=0.5", "experiment=early", "model.width=0.125"], tmp_path)
    _sigterm_once(driver, err, "pretrain resnet26 on shapes", 300, 120)  # during its progress bar
    assert driver.returncode == 130, err.text()[-3000:]
    assert "interrupted before the sweep started" in err.text() and "Traceback" not in err.text(), err.text()[-3000:]


def test_sigterm_during_the_closing_lets_it_finish_in_a_true_state(tmp_path):
    # What `docker stop` sends. Ray's handler (exit 15, no message) used to replace the project's after ray.init,
    # and the parent stayed RUNNING.
    driver, err = _driver(["budgets=0.5", "experiment=closing", *TINY], tmp_path)
    _sigterm_once(driver, err, "closing the sweep (FINISHED)", 600, 300)
    assert driver.returncode == 0, err.text()[-3000:]
    assert "SIGTERM during the closing of the sweep: finishing the closing first" in err.text()
    client, experiment_id = client_and_experiment(tmp_path, "closing")
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''")
    assert parent.info.status == "FINISHED"
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
