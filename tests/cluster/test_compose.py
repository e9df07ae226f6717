"""docker-compose.yml, the Dockerfile and .env.example, read as data (no Docker engine needed); the local commands
localstack derives from them are checked in tests/localstack/test_compose.py."""

from __future__ import annotations

import importlib.metadata
import re
import stat
import subprocess

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from localstack import COMPOSE_FILE, DOCKERFILE, REPO, healthcheck_argv, load_compose
from localstack.compose import service_argv

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


# ---- image and settings: one set of versions (constraints.txt) for setup.sh, CI and the image --------------------
LOCK = REPO / "constraints.txt"
REFRESH = ("move a version on purpose with `.venv/bin/uv pip compile pyproject.toml --extra dev --universal "
           "-o constraints.txt --upgrade-package NAME`, then `bash setup.sh` (README, Tested versions)")


def dockerfile_args() -> dict[str, str]:
    return {k: v.strip("'\"") for k, v in re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M)}


def lock_entries() -> dict[str, tuple[Requirement, set[str]]]:
    """constraints.txt as {name: (pinned requirement, names it is required by)}, from uv's ``# via`` notes."""
    entries: dict[str, tuple[Requirement, set[str]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line)
            current = canonicalize_name(requirement.name)
            assert current not in entries, f"{LOCK.name}: {current} pinned twice"
            entries[current] = (requirement, set())
        elif current and line.strip().startswith("#") and line.strip() not in ("# via", "#"):
            via = line.strip().lstrip("#").strip().removeprefix("via ").split(" (")[0]
            entries[current][1].add(canonicalize_name(via))
    return entries


def cuda_runtime(entries) -> set[str]:
    """The lock lines a torch build brings by itself: needed on Linux only, and only through torch."""
    only_torch = {"torch"}
    grew = True
    while grew:
        found = {n for n, (_, via) in entries.items() if via and via <= only_torch} - only_torch
        grew = bool(found)
        only_torch |= found
    return {n for n in only_torch - {"torch"} if 'sys_platform == "linux"' in str(entries[n][0].marker)}


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_the_lock_pins_every_package_exactly_and_the_readme_names_its_versions():
    entries = lock_entries()
    loose = [str(r) for r, _ in entries.values() if [s.operator for s in r.specifier] != ["=="]]
    assert not loose, f"{LOCK.name}: not pinned: {loose}"
    assert {"torch", "torchvision"} <= set(entries)  # pinned together: torchvision must match torch exactly
    readme = (REPO / "README.md").read_text()
    tested = readme[readme.index("### Tested versions"):].split("\n## ", 1)[0]
    named = dict(re.findall(r"`([\w.-]+)==([^`]+)`", tested))
    assert {"torch", "torchvision", "ray", "mlflow"} <= set(named)
    stale = {n: v for n, v in named.items() if str(entries[canonicalize_name(n)][0].specifier) != f"=={v}"}
    assert not stale, f"README.md, Tested versions: {stale} differ from {LOCK.name}"


def test_the_installed_environment_is_the_locked_one():
    """Every package the project needs, transitively, is pinned in constraints.txt at the installed version."""
    entries = lock_entries()
    wrong, missing = [], []
    seen, todo = set(), [("bap-sweeps", {"dev"})]
    while todo:
        name, extras = todo.pop()
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        version = installed(name)
        if version is None:
            missing.append(f"{name} is not installed")
            continue
        if name != "bap-sweeps":
            if name not in entries:
                missing.append(f"{name} {version} is installed and needed but {LOCK.name} does not pin it")
            elif not entries[name][0].specifier.contains(version, prereleases=True):
                wrong.append(f"{name} {version} is installed, {LOCK.name} pins {entries[name][0].specifier}")
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((canonicalize_name(requirement.name), set(requirement.extras)))
    assert not wrong, f"run `bash setup.sh` to install the locked versions, or {REFRESH}:\n" + "\n".join(wrong)
    assert not missing, f"regenerate {LOCK.name} (README, Tested versions):\n" + "\n".join(missing)


def pip_installs(text: str) -> list[str]:
    """Each ``pip install`` command of a shell script or Dockerfile, continuation lines joined."""
    return re.findall(r"pip(?:_install\b| install\b)[^;&\n]*", text.replace("\\\n", " "))


def test_setup_sh_installs_only_through_the_lock():
    text = (REPO / "setup.sh").read_text()
    assert "pip install --quiet -c constraints.txt" in text, "setup.sh: install through constraints.txt"
    assert "==" not in text, "setup.sh: a version belongs in constraints.txt"
    assert all(command.startswith("pip_install") for command in pip_installs(text) if "-c constraints" not in command)


def test_the_image_installs_only_through_the_lock():
    text = DOCKERFILE.read_text()
    assert not re.search(r"==\d", text), "Dockerfile: a version belongs in constraints.txt"
    assert not [k for k in dockerfile_args() if k.endswith("_VERSION") and k != "PYTHON_VERSION"], "Dockerfile"
    assert "COPY constraints.txt /etc/bap/constraints.txt" in text
    assert re.search(r"^ +PIP_CONSTRAINT=/etc/bap/constraints.txt \\$", text, re.M)
    assert text.index("COPY constraints.txt") < re.search(r"^[^#\n]*pip install", text, re.M).start()
    # Every image, the head's CPU one and the GPU worker's CUDA one, gets the same versions but torch's CUDA
    # runtime, which a torch build from the PyTorch index pins itself.
    entries = lock_entries()
    dropped = {n for n, (r, _) in entries.items() if re.search(dockerfile_args()["CUDA_RUNTIME"], str(r))}
    assert dropped == cuda_runtime(entries) and "nvidia-ml-py" not in dropped, "Dockerfile: CUDA_RUNTIME"
    assert dockerfile_args()["TORCH_INDEX"] == "cpu"
    # The repository layout is kept (sweeps/ is found beside the package source), and it runs as non-root.
    assert "WORKDIR /app" in text and "COPY . /app" in text and "pip install -e ." in text
    assert re.search(r"^USER bap$", text, re.M)
    # The C++ switched conv is built into the image, by the user that trains, so no container compiles it again.
    assert re.search(r"apt-get install .*\bg\+\+", text)
    assert text.index("USER bap") < text.index("native.build()")


def test_ci_runs_the_readmes_commands_and_starts_only_postgresql():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    readme = (REPO / "README.md").read_text()
    (test_command,) = set(re.findall(r"^    bash setup.sh && (\.venv/bin/python -m pytest.*)$", readme, re.M))
    assert ci[-1] == test_command and "bash setup.sh" in ci, ".ci/run: run the README's commands"
    assert not pip_installs("\n".join(ci)), ".ci/run: installs belong in setup.sh, with constraints.txt"


def test_env_example_documents_every_variable_and_holds_no_secret():
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))  # $${...} is the shell's
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert variables == set(example), variables ^ set(example)
    assert example["RAY_AUTH_TOKEN"] == "" and example["POSTGRES_PASSWORD"] == ""
    assert example["BIND_ADDRESS"] == "127.0.0.1" and example["RAY_DASHBOARD_BIND_ADDRESS"] == "127.0.0.1"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()
