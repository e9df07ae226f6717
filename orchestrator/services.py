"""The services a sweep needs, checked before anything is created, and Ray started or joined."""

from __future__ import annotations

import socket
import urllib.parse

import ray

from orchestrator.config import SweepConfig
from orchestrator.errors import ServiceUnavailable
from orchestrator.tracking import client_for
from orchestrator.validate import local_resources

SERVICE_TIMEOUT_S = 10.0  # one bounded attempt per service before anything is created


def _connect(host: str, port: int) -> None:
    socket.create_connection((host.strip("[]") or "127.0.0.1", port), timeout=SERVICE_TIMEOUT_S).close()


def check_services(cfg: SweepConfig) -> None:
    """Fail within seconds, naming the variable, the address and the fix, when MLflow or the Ray cluster cannot be
    reached: before any pretraining, MLflow run or Ray job (an unreachable service used to mean minutes of silent
    retries, then a traceback and a parent run left RUNNING). Raises ``ServiceUnavailable``."""
    uri = cfg.mlflow.tracking_uri
    if uri.startswith(("http://", "https://")):
        url = urllib.parse.urlsplit(uri)
        try:
            # The socket bounds an address that drops packets; the request checks an MLflow server answers.
            _connect(url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
            client_for(uri).search_experiments(max_results=1)
        except Exception as error:  # connection refused, DNS, timeout, HTTP error: all mean "not usable"
            raise ServiceUnavailable(
                f"error: MLflow at {uri} (MLFLOW_TRACKING_URI / mlflow.tracking_uri) is unreachable "
                f"({type(error).__name__}); start the server (e.g. `docker compose up mlflow`), fix "
                "the address, or unset it for a local sqlite:///mlflow.db") from None
    address = cfg.ray.address
    if address and address != "auto":
        host, _, port = address.split("://", 1)[-1].rpartition(":")
        try:
            _connect(host, int(port))
        except (OSError, ValueError) as error:
            raise ServiceUnavailable(
                f"error: the Ray cluster at {address} (RAY_ADDRESS / ray.address) is unreachable "
                f"({type(error).__name__}: {error}); start it (`ray start --head` or the compose "
                "stack), fix the address (host:port or ray://host:10001), or unset it for local Ray") from None


def start_ray(cfg: SweepConfig) -> None:
    """Join the cluster at ``ray.address``, or start a local Ray sized to this machine; nothing if Ray is up."""
    if ray.is_initialized():
        return
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=True)
    else:
        # A local Ray gets the package through the working directory it starts in.
        ray.init(num_cpus=int(local_resources()["CPU"]), include_dashboard=False)
