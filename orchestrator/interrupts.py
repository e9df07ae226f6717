"""How a running sweep stops on Ctrl-C or SIGTERM: through Tune's own stop, so every run ends in a true state."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable, Iterator

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
