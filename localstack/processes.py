"""Local processes for the stack's services and drivers: each in a process group of its own, stopped by that
group's id, never by name (``ray stop`` would end every Ray instance on the machine)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

LOCALHOST = "127.0.0.1"
# The venv's console scripts (ray, mlflow) first on PATH, as in the image.
BIN_DIR = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def base_env() -> dict[str, str]:
    """This process's environment without the settings a service or driver must get explicitly."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_")) and k not in ("PYTEST_CURRENT_TEST",)}
    env["PATH"] = BIN_DIR + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Process:
    """A child in its own process group (``start_new_session``), so it and everything it spawned can be
    stopped by group id without touching anything else on the machine."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], cwd: Path, log_dir: Path) -> None:
        self.name, self.argv = name, argv
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.pgid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def _kill_session(self) -> None:
        """SIGKILL to the process group and to every other process of the session: Ray's raylet starts each
        worker process (a trial's actor) in a process group of its own, but within the session."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid, _ in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, grace_s: float = 40.0) -> None:
        """SIGTERM to the leader only (``ray start --block`` then drains its node and stops its children; a
        signal to the whole group would kill those first and leave it waiting), then SIGKILL to what is left."""
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL to everything the process started: the fault the tests inject, and the last step of ``stop``."""
        self._kill_session()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def members(self) -> list[tuple[int, str]]:
        """(pid, command line) of every live process of this process's session (its group and the groups its
        children made, such as Ray's worker processes)."""
        members = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                state, _, _, session = stat[stat.rindex(")") + 2:].split()[:4]
                if int(session) != self.pgid or state == "Z":
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    members.append((int(entry), f.read().replace(b"\0", b" ").decode(errors="replace").strip()))
            except (OSError, ValueError):
                continue
        return members


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5,
               processes: tuple[Process, ...] = ()) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail early when one of ``processes`` died."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        for p in processes:
            if not p.alive():
                raise AssertionError(f"{p.name} exited ({p.popen.returncode}) while waiting for {what}\n{p.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n"
                                 + "\n".join(p.tail(20) for p in processes))
        time.sleep(interval_s)


def http_ok(url: str, headers: Optional[Mapping[str, str]] = None, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout_s) as r:
            return r.status == 200
    except Exception:
        return False


