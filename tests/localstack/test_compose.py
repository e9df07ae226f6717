"""localstack/compose.py: compose's variable syntax, and the local commands it derives from docker-compose.yml, which
differ from compose's only where a host differs from a container."""

from __future__ import annotations

import os
import re

import pytest

from localstack import MlflowServer, Stack, load_compose
from localstack.compose import interpolate, service_argv
from tests.cluster.test_compose import ENV


# ---- compose's variable syntax, as localstack implements it -------------------------------------------------------
@pytest.mark.parametrize("text, env, expected", [
    ("${A:-x}", {}, "x"), ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""), ("${A:-x}", {"A": "y"}, "y"),
    ("$A/${B}", {"A": "1", "B": "2"}, "1/2"), ("$$HOME", {}, "$HOME"), ("${A}", {}, ""),
])
def test_interpolate_follows_compose(text, env, expected):
    assert interpolate(text, env) == expected


@pytest.mark.parametrize("missing", ["RAY_AUTH_TOKEN", "POSTGRES_PASSWORD"])
def test_secrets_are_required(missing):
    with pytest.raises(KeyError, match=missing):
        load_compose({k: v for k, v in ENV.items() if k != missing})


# ---- localstack runs the compose commands, changed only where a host differs from a container ----------------
def test_localstack_commands_are_the_compose_commands(tmp_path):
    stack = Stack(tmp_path)
    stack.mlflow = MlflowServer(stack, "mlflow", "sqlite:///x.db")  # not started: only commands are compared
    try:
        changed = {}
        for name in ("ray-head", "ray-worker", "sweep"):
            local = stack.localized(name)
            compose_argv = service_argv(stack.compose["services"][name])
            added = [after for before, after in local.changes if before == ""]
            assert len(local.argv) == len(compose_argv) + len([a for a in added if a.startswith("--")]), name
            changed[name] = sorted(re.split(r"[= ]", before)[0] for before, _ in local.changes if before)
        assert changed["ray-head"] == ["--dashboard-host", "--dashboard-port", "--port", "MLFLOW_TRACKING_URI"]
        assert changed["ray-worker"] == ["--address"]
        assert changed["sweep"] == ["/app/docker/sweep.sh", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"]
        server = stack.mlflow
        assert sorted(re.split(r"[= ]", b)[0] for b, _ in server.local.changes if b) == \
            ["--artifacts-destination", "--host", "--port", "MLFLOW_BACKEND_STORE_URI"]
        assert [a for a in server.local.argv if a.startswith("--")] == \
            [a for a in service_argv(stack.compose["services"]["mlflow"]) if a.startswith("--")]
    finally:
        os.rmdir(stack.temp_dir)
