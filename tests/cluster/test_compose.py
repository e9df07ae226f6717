"""docker-compose.yml, the Dockerfile and .env.example, read as data (no Docker engine needed), and the
local commands (localstack/) checked against them: what the cluster tests run is what compose would run."""

from __future__ import annotations

import os
import re
import stat
import subprocess

import mlflow
import pytest
import ray

from localstack import COMPOSE_FILE, DOCKERFILE, REPO, MlflowServer, Stack, healthcheck_argv, load_compose
from localstack.compose import interpolate, service_argv

TOKEN = "f" * 64
ENV = {"RAY_AUTH_TOKEN": TOKEN, "POSTGRES_PASSWORD": "pw"}
RAY_NODES = ("ray-head", "ray-worker", "ray-worker-gpu")
DRIVERS = ("sweep",)


@pytest.fixture(scope="module")
def compose():
    return load_compose(ENV)


def flag(argv: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value``."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return argv[i + 1]
    raise KeyError(f"{name} not in {argv}")


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


# ---- the services ---------------------------------------------------------------------------------------------------
def test_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "ray-worker", "ray-worker-gpu", "sweep"}
    # `docker compose up` starts the stack; the GPU worker and the driver need their profile (or `run`).
    assert {n for n, s in services.items() if not s.get("profiles")} == {"postgres", "mlflow", "ray-head",
                                                                           "ray-worker"}
    assert services["ray-worker-gpu"]["profiles"] == ["gpu"]
    assert services["sweep"]["profiles"] == ["sweep"]
    assert set(compose["volumes"]) == {"postgres-data", "mlflow-artifacts", "runs"}


def published(service: dict) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_ports_bind_to_localhost_unless_opted_in():
    services = load_compose(ENV)["services"]
    assert published(services["mlflow"]) == ["127.0.0.1:5000:5000"]
    assert published(services["ray-head"]) == ["127.0.0.1:8265:8265"]  # dashboard only; no GCS port
    for name in ("postgres", "ray-worker", "ray-worker-gpu", "sweep"):
        assert not published(services[name]), name
    opened = load_compose({**ENV, "BIND_ADDRESS": "0.0.0.0", "MLFLOW_PORT": "5001"})["services"]
    assert published(opened["mlflow"]) == ["0.0.0.0:5001:5000"]
    assert published(opened["ray-head"]) == ["127.0.0.1:8265:8265"]  # opening MLflow does not open the dashboard


def test_postgres_backs_mlflow_with_proxied_artifacts(compose):
    postgres, server = compose["services"]["postgres"], compose["services"]["mlflow"]
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    argv = service_argv(server)
    assert argv[:2] == ["mlflow", "server"] and "--serve-artifacts" in argv
    assert flag(argv, "--artifacts-destination") == "/mlartifacts"
    assert "mlflow-artifacts:/mlartifacts" in server["volumes"]
    assert flag(argv, "--host") == "0.0.0.0" and flag(argv, "--port") == "5000"
    assert "mlflow:5000" in flag(argv, "--allowed-hosts").split(",")  # the Host header of the containers
    uri = server["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert uri == "postgresql+psycopg2://mlflow:pw@postgres:5432/mlflow"
    assert server["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert server["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert healthcheck_argv(server)[-1].endswith("r.urlopen('http://localhost:5000/health', timeout=5)")


def test_ray_nodes_share_one_token_and_the_storage(compose):
    services = compose["services"]
    for name in (*RAY_NODES, *DRIVERS):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == TOKEN, name
        assert "runs:/app/runs" in services[name]["volumes"], name  # checkpoints + spool, seen by every node
    head = service_argv(services["ray-head"])
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    assert flag(head, "--port") == "6379" and flag(head, "--num-cpus") == "0"
    assert flag(head, "--include-dashboard") == "true"
    for name in ("ray-worker", "ray-worker-gpu"):
        argv = service_argv(services[name])
        assert argv[:2] == ["ray", "start"] and "--block" in argv
        assert flag(argv, "--address") == "ray-head:6379", name  # workers find the head by service name
        assert services[name]["depends_on"] == {"ray-head": {"condition": "service_healthy"}}
    assert flag(service_argv(services["ray-worker"]), "--num-cpus") == "2"
    # a bash built-in, not `ray health-check` (a Python start and Ray's import every time)
    assert healthcheck_argv(services["ray-head"]) == [
        "bash", "-c", "address=localhost:6379; exec 3<>/dev/tcp/${address%:*}/${address#*:}"]


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", size.lower()).groups()
    return int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]


def test_every_ray_nodes_object_store_fits_its_shm(compose):
    # Ray's default store (30% of the host's memory) outgrows a 2 GB /dev/shm and falls back to disk.
    services = compose["services"]
    for name in RAY_NODES:
        store = int(flag(service_argv(services[name]), "--object-store-memory"))
        assert store < _bytes(services[name]["shm_size"]), name
    sweep = services["sweep"]
    assert int(sweep["environment"]["RAY_OBJECT_STORE_BYTES"]) < _bytes(sweep["shm_size"])
    assert "--object-store-memory=$RAY_OBJECT_STORE_BYTES" in (REPO / "docker" / "sweep.sh").read_text()
    assert _seconds(sweep["stop_grace_period"]) > 60  # the closing may wait mlflow.end_wait_s (60 s) for MLflow


def _seconds(duration: str) -> int:
    return int(duration.rstrip("s"))


def test_gpu_worker_reserves_gpus_and_uses_the_cuda_image(compose):
    gpu = compose["services"]["ray-worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_INDEX"] == "cu128" and gpu["image"] == "bap-sweeps:cu128"
    assert compose["services"]["ray-worker"]["image"] == "bap-sweeps:cpu"


def test_sweep_service_runs_the_driver_on_a_cpu_less_node(compose):
    sweep = compose["services"]["sweep"]
    assert sweep["entrypoint"] == ["/app/docker/sweep.sh"] and sweep["command"] == []
    assert sweep["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    assert sweep["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    script = REPO / "docker" / "sweep.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "--num-cpus=0 --num-gpus=0" in text and 'python -m orchestrator.sweep "$@"' in text


# ---- image and settings ------------------------------------------------------------------------------------------
def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))


def test_dockerfile_pins_what_the_tests_run():
    args = dockerfile_args()
    assert args["TORCH_INDEX"] == "cpu"
    assert (args["TORCH_VERSION"], args["TORCHVISION_VERSION"]) == ("2.14.1", "0.29.1")
    assert args["RAY_VERSION"] == ray.__version__ and args["MLFLOW_VERSION"] == mlflow.__version__
    try:
        import psycopg2
    except ImportError:
        pass
    else:
        assert psycopg2.__version__.split()[0] == args["PSYCOPG2_VERSION"]
    text = DOCKERFILE.read_text()
    # The repository layout is kept (sweeps/ is found beside the package source), and it runs as non-root.
    assert "WORKDIR /app" in text and "COPY . /app" in text and "pip install -e ." in text
    assert re.search(r"^USER bap$", text, re.M)
    # The C++ switched conv is built into the image, by the user that trains, so no container compiles it again.
    assert re.search(r"apt-get install .*\bg\+\+", text)
    assert text.index("USER bap") < text.index("native.build()")


def test_env_example_documents_every_variable_and_holds_no_secret():
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))  # $${...} is the shell's
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert variables == set(example), variables ^ set(example)
    assert example["RAY_AUTH_TOKEN"] == "" and example["POSTGRES_PASSWORD"] == ""
    assert example["BIND_ADDRESS"] == "127.0.0.1" and example["RAY_DASHBOARD_BIND_ADDRESS"] == "127.0.0.1"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()


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
