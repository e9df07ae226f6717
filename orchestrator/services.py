"""The services a sweep needs, checked before anything is created, and Ray started or joined."""

from __future__ import annotations

import socket

import ray

from orchestrator.config import SweepConfig
from orchestrator.errors import ServiceUnavailable
from orchestrator.local_ray import start_local_ray
from orchestrator.tracking import SERVICE_TIMEOUT_S, check_mlflow
from orchestrator.validate import local_resources


def _connect(host: str, port: int) -> None:
    socket.create_connection((host.strip("[]") or "127.0.0.1", port), timeout=SERVICE_TIMEOUT_S).close()


def check_services(cfg: SweepConfig) -> None:
    """Fail within seconds, naming the variable, the address and the fix, when MLflow or the Ray cluster cannot be
    reached: before any pretraining, MLflow run or Ray job (an unreachable service used to mean minutes of silent
    retries, then a traceback and a parent run left RUNNING). Raises ``ServiceUnavailable``."""
    check_mlflow(cfg.mlflow.tracking_uri)
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
        # A local Ray gets the package through the working directory it starts in; bound to 127.0.0.1, its token
        # file private (orchestrator.local_ray).
        start_local_ray(int(local_resources()["CPU"]))
