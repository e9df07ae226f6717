"""The services of docker-compose.yml, run as local processes: the compose stack without a Docker engine.

Every command, environment variable and health check comes from docker-compose.yml itself, interpolated
from a test ``.env`` the way compose does it. Only what must differ between containers on a network and
processes on one host is changed, each change named in ``Localized.changes`` (tests/cluster/test_compose.py
checks that nothing else differs):

- a listening interface (``--host 0.0.0.0``, ``--dashboard-host=0.0.0.0``) becomes 127.0.0.1;
- a listening port (``--port=6379``, ``--dashboard-port=8265``, ``--port 5000``) becomes a free port;
- a service address (``ray-head:6379``, ``mlflow:5000``, the health checks' ``localhost:PORT``) becomes
  127.0.0.1 and that port;
- a container path (``/mlartifacts``, ``/app/``) becomes a test directory or the repository;
- ``MLFLOW_BACKEND_STORE_URI`` becomes SQLite in the test directory, or the PostgreSQL server CI starts;
- several Ray nodes share one host, so each gets ``--temp-dir`` (one short directory for the cluster:
  Ray's socket paths must stay under 107 characters) and its own ``--dashboard-agent-listen-port``.

Each process runs in its own process group and is stopped by that group's id, never by name: ``ray stop``
would end every Ray instance on the machine. Ray itself, on Linux, announces a node at the host's own
address even when told 127.0.0.1 (``services.resolve_ip_for_localhost``), so its internal traffic uses that
address; it never leaves the machine.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
LOCALHOST = "127.0.0.1"
# The venv's console scripts (ray, mlflow) first on PATH, as in the image.
BIN_DIR = str(Path(sys.executable).parent)

# Flags whose value is where a service listens; the harness gives them 127.0.0.1 or a free port.
LISTEN_FLAGS = ("--host", "--dashboard-host", "--port", "--dashboard-port")

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)")


# ---- compose file ---------------------------------------------------------------------------------------------
def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable syntax: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}`` and ``${VAR?error}`` (an unset variable without a default becomes "", as in compose)."""
    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg, value = match.group("op"), match.group("arg"), env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op and op.endswith("-") and missing:
            return arg
        if op and op.endswith("?") and missing:
            raise KeyError(f"compose variable {name} is required: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def load_compose(env: Optional[Mapping[str, str]] = None) -> dict:
    """docker-compose.yml with YAML anchors merged and, given ``env``, variables interpolated."""
    with open(COMPOSE_FILE) as f:
        raw = yaml.safe_load(f)
    return raw if env is None else _interpolate_tree(raw, env)


def service_argv(service: Mapping[str, Any]) -> list[str]:
    """What the container runs: entrypoint + command (the image has no entrypoint of its own)."""
    return [str(a) for a in (service.get("entrypoint") or [])] + [str(a) for a in (service.get("command") or [])]


def healthcheck_argv(service: Mapping[str, Any]) -> list[str]:
    test = list(service["healthcheck"]["test"])
    if test[0] == "CMD":
        return [str(a) for a in test[1:]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", str(test[1])]
    raise ValueError(f"healthcheck test {test!r} starts with neither CMD nor CMD-SHELL")


# ---- turning a service into a local process --------------------------------------------------------------------
@dataclass
class Localized:
    argv: list[str]
    env: dict[str, str]
    # (what the compose file says, what the harness runs) for every argument or variable it changed or added.
    changes: list[tuple[str, str]] = field(default_factory=list)


def _rewrite_flags(argv: list[str], values: Mapping[str, str], changes: list) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if eq and flag in values:
            new = f"{flag}={values[flag]}"
            changes.append((arg, new))
            out.append(new)
        elif not eq and arg in values and i + 1 < len(argv):
            changes.append((f"{arg} {argv[i + 1]}", f"{arg} {values[arg]}"))
            out += [arg, values[arg]]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def _replace(text: str, addresses: Mapping[str, str]) -> str:
    for before, after in addresses.items():
        text = text.replace(before, after)
    return text


def localize(service: Mapping[str, Any], *, flags: Mapping[str, str] = {}, addresses: Mapping[str, str] = {},
             env: Mapping[str, str] = {}, extra_args: tuple[str, ...] = ()) -> Localized:
    """The local process for ``service``: ``flags`` replaces flag values, ``addresses`` rewrites service
    addresses in the environment, ``env`` overrides variables, ``extra_args`` are appended."""
    changes: list[tuple[str, str]] = []
    argv = _rewrite_flags(service_argv(service), flags, changes)
    if argv and argv[0].startswith("/app/"):
        new = str(REPO / argv[0][len("/app/"):])
        changes.append((argv[0], new))
        argv[0] = new
    argv += list(extra_args)
    changes += [("", a) for a in extra_args]
    service_env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    local_env = {}
    for key, value in service_env.items():
        new = env.get(key, _replace(value, addresses))
        if new != value:
            changes.append((f"{key}={value}", f"{key}={new}"))
        local_env[key] = new
    for key in env.keys() - service_env.keys():
        changes.append(("", f"{key}={env[key]}"))
        local_env[key] = env[key]
    return Localized(argv, local_env, changes)


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


# ---- processes ----------------------------------------------------------------------------------------------------
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


# ---- the stack ------------------------------------------------------------------------------------------------------
class MlflowServer:
    """The compose ``mlflow`` service on a free port, with SQLite (or PostgreSQL) and local artifacts."""

    def __init__(self, stack: "Stack", name: str, backend_uri: str) -> None:
        self.stack, self.name, self.backend_uri = stack, name, backend_uri
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        self.artifacts = stack.root / f"{name}-artifacts"
        self.service = stack.compose["services"]["mlflow"]
        self.local = localize(
            self.service,
            flags={"--host": LOCALHOST, "--port": str(self.port), "--artifacts-destination": str(self.artifacts)},
            env={"MLFLOW_BACKEND_STORE_URI": backend_uri},
        )
        self.process: Optional[Process] = None

    def start(self, timeout_s: float = 120.0) -> "MlflowServer":
        self.process = Process(self.name, self.local.argv, {**base_env(), **self.local.env}, self.stack.root,
                               self.stack.log_dir)
        wait_until(lambda: http_ok(f"{self.url}/health"), timeout_s, f"{self.name} /health",
                   processes=(self.process,))
        return self

    def healthcheck(self) -> subprocess.CompletedProcess:
        """The compose health check of the service, pointed at this server."""
        argv = [_replace(a, {"localhost:5000": f"{LOCALHOST}:{self.port}"}) for a in healthcheck_argv(self.service)]
        return subprocess.run(argv, env=base_env(), capture_output=True, text=True, timeout=30)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace_s=15)


class Stack:
    """A Ray head, ``workers`` Ray workers and an MLflow server (SQLite unless ``mlflow_backend_uri`` names a
    PostgreSQL database), as docker-compose.yml starts them.

    ``compose_env`` plays the part of ``.env``: a fresh Ray token, one CPU per worker (two cores here).
    """

    def __init__(self, root: Path, workers: int = 2, mlflow_backend_uri: Optional[str] = None) -> None:
        self.root = root
        self.mlflow_backend_uri = mlflow_backend_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.log_dir = root / "logs"
        self.token = secrets.token_hex(32)
        self.compose_env = {"RAY_AUTH_TOKEN": self.token, "POSTGRES_PASSWORD": "unused-here",
                            "RAY_WORKER_CPUS": "1"}
        self.compose = load_compose(self.compose_env)
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.gcs_address = f"{LOCALHOST}:{self.gcs_port}"
        self.dashboard_url = f"http://{LOCALHOST}:{self.dashboard_port}"
        # Short and outside the test's tmp dir: Ray puts AF_UNIX sockets (107-character limit) in it.
        self.temp_dir = tempfile.mkdtemp(prefix="bapray-", dir="/tmp")
        self.addresses = {"ray-head:6379": self.gcs_address, "localhost:6379": self.gcs_address}
        self.n_workers = workers
        self._nodes = 0
        self._restarts = 0
        self.head: Optional[Process] = None
        self.workers: list[Process] = []
        self.mlflow: Optional[MlflowServer] = None
        self._others: list[Process] = []
        self._servers: list[MlflowServer] = []

    # -- nodes --
    def node_args(self) -> tuple[str, ...]:
        """What each Ray node needs to share a host with others: a temp dir and a dashboard-agent port of its own
        (the default 52365 is one port per host)."""
        self._nodes += 1
        return (f"--temp-dir={self.temp_dir}/{self._nodes}", f"--dashboard-agent-listen-port={free_port()}")

    def localized(self, name: str) -> Localized:
        service = self.compose["services"][name]
        if name == "ray-head":
            return localize(service, flags={"--port": str(self.gcs_port), "--dashboard-host": LOCALHOST,
                                            "--dashboard-port": str(self.dashboard_port)},
                            addresses=self._mlflow_addresses(), extra_args=self.node_args())
        if name in ("ray-worker", "ray-worker-gpu"):
            return localize(service, flags={"--address": self.gcs_address}, extra_args=self.node_args())
        if name == "sweep":
            return localize(service, addresses={**self.addresses, **self._mlflow_addresses()},
                            env={"RAY_START_EXTRA_ARGS": " ".join(self.node_args())})
        raise KeyError(f"no local form for service {name!r}")

    def _mlflow_addresses(self) -> dict[str, str]:
        return {"http://mlflow:5000": self.mlflow.url} if self.mlflow else {}

    def _start_node(self, name: str, service: str) -> Process:
        local = self.localized(service)
        return Process(name, local.argv, {**base_env(), **local.env}, self.root, self.log_dir)

    def _wait_node(self, node: Process, timeout_s: float = 90.0) -> None:
        wait_until(lambda: "Ray runtime started" in node.log(), timeout_s, f"{node.name} to start",
                   processes=(node,))

    def start(self) -> "Stack":
        self.mlflow = self.start_mlflow("mlflow", self.mlflow_backend_uri, wait=False)
        self.head = self._start_node("ray-head", "ray-head")
        self._wait_node(self.head)
        for _ in range(self.n_workers):
            self.add_worker(wait=False)
        for worker in self.workers:
            self._wait_node(worker)
        wait_until(lambda: http_ok(f"{self.mlflow.url}/health"), 120, "mlflow /health",
                   processes=(self.mlflow.process,))
        return self

    def add_worker(self, wait: bool = True) -> Process:
        worker = self._start_node(f"ray-worker-{len(self.workers) + 1}", "ray-worker")
        self.workers.append(worker)
        if wait:
            self._wait_node(worker)
        return worker

    def restart_ray(self) -> None:
        """A new head and workers on the same addresses, as a restarted compose stack (after the head was lost)."""
        for node in [*self.workers, self.head]:
            node.kill()
        self._restarts += 1
        suffix = f"-restart{self._restarts}"  # a log of its own: the old one already says "Ray runtime started"
        self.workers = []
        self.head = self._start_node(f"ray-head{suffix}", "ray-head")
        self._wait_node(self.head)
        for n in range(self.n_workers):
            self.workers.append(self._start_node(f"ray-worker-{n + 1}{suffix}", "ray-worker"))
        for worker in self.workers:
            self._wait_node(worker)

    def head_healthcheck(self) -> subprocess.CompletedProcess:
        argv = [_replace(a, self.addresses) for a in healthcheck_argv(self.compose["services"]["ray-head"])]
        env = {**base_env(), **self.localized("ray-head").env}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    def node_running(self, marker: str) -> Optional[Process]:
        """The worker whose process group holds a process whose command line contains ``marker``."""
        for worker in self.workers:
            if worker.alive() and any(marker in cmd for _, cmd in worker.members()):
                return worker
        return None

    # -- MLflow --
    def start_mlflow(self, name: str, backend_uri: str, wait: bool = True) -> MlflowServer:
        server = MlflowServer(self, name, backend_uri)
        server.start(timeout_s=120) if wait else self._start_unwaited(server)
        self._servers.append(server)
        return server

    @staticmethod
    def _start_unwaited(server: MlflowServer) -> None:
        server.process = Process(server.name, server.local.argv, {**base_env(), **server.local.env},
                                 server.stack.root, server.stack.log_dir)

    # -- drivers --
    def driver_env(self, tracking_uri: Optional[str] = None, token: Optional[str] = None) -> dict[str, str]:
        """Submitting from this host: only RAY_ADDRESS and MLFLOW_TRACKING_URI (and the token) point at the stack."""
        return {**base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or self.token,
                "RAY_ADDRESS": self.gcs_address, "MLFLOW_TRACKING_URI": tracking_uri or self.mlflow.url,
                "BAP_CACHE_DIR": str(self.root / "cache")}

    def driver(self, name: str, args: list[str], cwd: Path, tracking_uri: Optional[str] = None) -> Process:
        """``python -m orchestrator.sweep ARGS`` from this host (which is a node of the cluster)."""
        cwd.mkdir(parents=True, exist_ok=True)
        process = Process(name, [sys.executable, "-m", "orchestrator.sweep", *args],
                          self.driver_env(tracking_uri), cwd, self.log_dir)
        self._others.append(process)
        return process

    def sweep_service(self, name: str, args: list[str], cwd: Path, tracking_uri: Optional[str] = None) -> Process:
        """The compose ``sweep`` service (``docker compose run --rm sweep ARGS``): docker/sweep.sh joins the
        cluster as a CPU-less node and runs the driver there."""
        cwd.mkdir(parents=True, exist_ok=True)
        local = self.localized("sweep")
        env = {**base_env(), **local.env, "BAP_CACHE_DIR": str(self.root / "cache")}
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        process = Process(name, [*local.argv, *args], env, cwd, self.log_dir)
        self._others.append(process)
        return process

    # -- teardown --
    def stop(self) -> None:
        """Drivers, then workers, then the head, then the MLflow servers; each by its process group."""
        for process in self._others:
            process.stop(grace_s=20)
        for worker in self.workers:
            worker.stop()
        if self.head is not None:
            self.head.stop()
        for server in self._servers:
            server.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def logs(self) -> str:
        processes = [p for p in [self.head, *self.workers, *self._others, *(s.process for s in self._servers)] if p]
        return "\n".join(p.tail(12) for p in processes)
