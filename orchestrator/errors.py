"""What stops a sweep, a trial run or a report, as exceptions; only the entry points turn them into exit statuses.

Library code (what a notebook or a test calls: ``run_sweep``, ``check_services``, ``report``) raises these, so a
caller can catch them and its interpreter keeps running. The entry points (``orchestrator.cli.run_hydra``, under
every ``python -m orchestrator.*``) print the message, ``str(error)``, on stderr and exit with ``exit_code``: the
statuses scripts and the compose stack already rely on.
"""

from __future__ import annotations

INVALID_CONFIG = 2  # the exit status of every entry point for a config that fails validation


class SweepError(Exception):
    """Base class: the message is what the user reads (it names the key or the service and the fix)."""

    exit_code = 1


class ConfigError(SweepError, ValueError):
    """The config is invalid: a key's value, named with what is allowed."""

    exit_code = INVALID_CONFIG


class UsageError(SweepError):
    """A valid config the entry point cannot run as asked: e.g. a search given to the one-trial entry point, a
    resume whose config differs from the sweep's, a report of an experiment that does not exist."""


class ServiceUnavailable(SweepError):
    """MLflow or the Ray cluster cannot be reached; the message names the address, the variable and the fix."""


class ClosingSpooled(ServiceUnavailable):
    """MLflow stayed unreachable at the end of a sweep: its closing waits in the spool for ``orchestrator.report
    sync=true``."""

    exit_code = 3


class TrialsFailed(SweepError):
    """The sweep ran to its end but some trials failed (the parent run is FAILED; each failure was printed)."""


class Interrupted(SweepError):
    """Ctrl-C or SIGTERM: the runs are marked KILLED; the message says how to resume."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
