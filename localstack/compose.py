"""docker-compose.yml as data: its variables interpolated the way compose does, and each service turned into the
command a local process runs.

Only what must differ between containers on a network and processes on one host is changed, each change named
in ``Localized.changes`` (tests/localstack/test_compose.py checks that nothing else differs):

- a listening interface (``--host 0.0.0.0``, ``--dashboard-host=0.0.0.0``) becomes 127.0.0.1;
- a listening port (``--port=6379``, ``--dashboard-port=8265``, ``--port 5000``) becomes a free port;
- a service address (``ray-head:6379``, ``mlflow:5000``, the health checks' ``localhost:PORT``) becomes
  127.0.0.1 and that port;
- a container path (``/mlartifacts``, ``/app/``) becomes a local directory or the repository;
- ``MLFLOW_BACKEND_STORE_URI`` becomes SQLite in the stack's directory, or a given PostgreSQL server;
- several Ray nodes share one host, so each gets ``--temp-dir`` (one short directory for the cluster:
  Ray's socket paths must stay under 107 characters) and its own ``--dashboard-agent-listen-port``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
# Flags whose value is where a service listens; localize gives them 127.0.0.1 or a free port.
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
    # (what the compose file says, what the local process runs) for every argument or variable it changed or added.
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


def replace_addresses(text: str, addresses: Mapping[str, str]) -> str:
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
        new = env.get(key, replace_addresses(value, addresses))
        if new != value:
            changes.append((f"{key}={value}", f"{key}={new}"))
        local_env[key] = new
    for key in env.keys() - service_env.keys():
        changes.append(("", f"{key}={env[key]}"))
        local_env[key] = env[key]
    return Localized(argv, local_env, changes)


