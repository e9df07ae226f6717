"""Library code raises ``orchestrator.errors``; the entry points (``cli.run_hydra``) print the message and exit with
the error's status, the one users and scripts already rely on."""

import pytest

from orchestrator.cli import QUIET_HYDRA, run_hydra
from orchestrator.errors import (INVALID_CONFIG, ClosingSpooled, ConfigError, Interrupted, ServiceUnavailable,
                                 TrialsFailed, UsageError)


@pytest.mark.parametrize("error, status", [
    (ConfigError("invalid sweep config:\n  - budgets has 1.5"), INVALID_CONFIG),
    (UsageError("error: orchestrator.train runs one trial"), 1),
    (ServiceUnavailable("error: MLflow at http://x is unreachable"), 1),
    (ClosingSpooled("error: MLflow at http://x is unreachable at the end of the sweep"), 3),
    (TrialsFailed(""), 1),
    (Interrupted("interrupted: resume with resume=true"), 130),
])
def test_an_entry_point_prints_the_errors_message_and_exits_with_its_status(error, status, capsys):
    def task(cfg):
        raise error

    with pytest.raises(SystemExit) as exited:
        run_hydra(task, QUIET_HYDRA)
    assert exited.value.code == status
    assert capsys.readouterr().err == (f"{error}\n" if str(error) else "")


def test_a_notebook_gets_an_exception_it_can_catch_not_an_exit():
    # Every one is an Exception (SystemExit is not): `except Exception` in a notebook or a test catches it.
    assert all(issubclass(e, Exception) for e in (ConfigError, UsageError, ServiceUnavailable, ClosingSpooled,
                                                  TrialsFailed, Interrupted))
    assert issubclass(ConfigError, ValueError)  # bad input, as STYLE.md asks
