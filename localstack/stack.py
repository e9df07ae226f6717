"""The compose stack as local processes: a Ray head, Ray workers and an MLflow server, started from the commands in
docker-compose.yml (``localstack.compose``). Ray itself, on Linux, announces a node at the host's own address even
when told 127.0.0.1 (``services.resolve_ip_for_localhost``), so its internal traffic uses that address; it never
leaves the machine.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from localstack.compose import Localized, healthcheck_argv, load_compose, localize, replace_addresses
from localstack.processes import LOCALHOST, Process, base_env, free_port, http_ok, wait_until


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
        argv = [replace_addresses(a, {"localhost:5000": f"{LOCALHOST}:{self.port}"}) for a in healthcheck_argv(self.service)]
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
        argv = [replace_addresses(a, self.addresses) for a in healthcheck_argv(self.compose["services"]["ray-head"])]
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
