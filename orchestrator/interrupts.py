"""Ctrl-C and SIGTERM at every phase of a sweep end in a true state and a message.

While trials run, ``graceful_stop`` turns the first signal into Tune's own stop (the sweep closes KILLED).

``ray.init`` installs Ray's own SIGTERM handler in the driver (``sys.exit(15)``): it replaced the project's, so a
SIGTERM after Ray started (what ``docker stop`` sends) ended the driver silently with the parent run RUNNING.
``after_ray_init`` puts SIGTERM back to "stop as Ctrl-C does". During the closing a first signal is deferred
(``closing``): the closing finishes and the runs end in the state the sweep reached; a second one abandons it and
marks the parent KILLED. Before the parent run exists nothing needs closing: ``reported`` turns the
interruption into ``Interrupted`` (exit 130) with a message instead of a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from typing import Callable, Iterator

from orchestrator.errors import Interrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


@contextlib.contextmanager
def graceful_stop() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM during ``fit`` triggers Tune's own stop (SIGUSR1: it saves the state, stops the trials and
    returns) and is remembered, so the sweep closes as KILLED; a second one raises KeyboardInterrupt."""
    stops: list[int] = []

    def handler(signum, frame) -> None:
        if stops:
            raise KeyboardInterrupt
        stops.append(signum)
        os.kill(os.getpid(), signal.SIGUSR1)

    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:
        signal.signal(signum, handler)
    try:
        # Tune's SIGINT handler would stop it without telling us.
        with environ({_TUNE_SIGINT_ENV: "1"}):
            yield lambda: bool(stops)
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block, the previous values back afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def after_ray_init() -> None:
    """SIGTERM stops as Ctrl-C does again (Ray's ``ray.init`` replaced that handler with its own exit)."""
    from orchestrator.cli import sigterm_as_ctrl_c

    sigterm_as_ctrl_c()


@contextlib.contextmanager
def closing(status: str, abandon: Callable[[], None]) -> Iterator[None]:
    """The closing of a sweep ending ``status``: a first Ctrl-C or SIGTERM is deferred (said on stderr), so the
    closing completes; a second one calls ``abandon`` (marks the parent run KILLED) and raises ``Interrupted``."""
    stops: list[int] = []
    print(f"closing the sweep ({status}): publishing its front to MLflow", file=sys.stderr, flush=True)

    def handler(signum, frame) -> None:
        if stops:
            raise KeyboardInterrupt
        stops.append(signum)
        print(f"{signal.Signals(signum).name} during the closing of the sweep: finishing the closing first, so its "
              "runs end in a true state; send it again to abandon the closing (the parent run is then marked "
              "KILLED)", file=sys.stderr, flush=True)

    saved = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    for signum in _SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            abandon()
        raise Interrupted("interrupted twice during the closing: the closing was abandoned and the parent run marked "
                          "KILLED (its front may be incomplete); `python -m orchestrator.report experiment=...` "
                          "rebuilds the front from MLflow") from None
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


def reported(task: Callable) -> Callable:
    """``task`` with a Ctrl-C or SIGTERM that escapes it (one before the sweep's parent run exists: validation,
    pretraining, Ray starting) raised as ``Interrupted``: a message and exit 130, not a traceback."""
    @functools.wraps(task)
    def run(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted("interrupted before the sweep started: no MLflow run was created and no trial ran; "
                              "run the command again to start it") from None
    return run
