"""The Ray a sweep starts when no cluster is named: reachable from this machine only, its token private.

Ray 2.60's own ``ray.init()`` listens on every interface (GCS, raylet, object manager, agents) and writes the
token it generates to ``~/.ray/auth_token`` readable by every user (0644): anyone on the network who read it, or
who found a port that takes no token, could run code as the sweep's user. Here the Ray processes bind 127.0.0.1
(Ray's single-machine mode, the one it uses on macOS and Windows) and the token file is created, or tightened,
to 0600 before Ray reads it. A cluster (``ray.address``) is configured by whoever runs it: docs/cluster.md.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import ray

log = logging.getLogger(__name__)

# Ray's switch for single-machine mode: every process binds the loopback address. Read by Ray's processes from the
# environment, and by the driver from a constant set when ray is imported (hence set there too).
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def token_path() -> Path:
    """Where Ray reads its token: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def private_token() -> None:
    """With token authentication on (Ray's default) and no ``RAY_AUTH_TOKEN`` given: the token file exists and
    only its owner may read it (created here with a random token, else its mode set to 0600)."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            os.chmod(path, 0o600)
        except OSError as error:  # another user's file: Ray reads it as it is
            log.warning("could not make Ray's token file %s private (%s)", path, error)
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # 256 bits, as Ray's own generator


def start_local_ray(num_cpus: int) -> None:
    """``ray.init`` of a new one-machine Ray bound to 127.0.0.1, with a private token file."""
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False
    private_token()
    # "local": a new Ray of this sweep's own, never a cluster someone else started on this machine (`ray start`),
    # which a bare ray.init() would join.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
