"""The services of docker-compose.yml run as local processes: the compose stack without a Docker engine.

Used by tests/cluster (the stack under faults) and by the benchmarks that measure a cluster. Every command,
environment variable and health check comes from docker-compose.yml itself (``compose``); ``processes`` starts and
stops them by process group; ``stack`` puts a Ray head, workers and MLflow together.
"""

from localstack.compose import COMPOSE_FILE, DOCKERFILE, REPO, Localized, healthcheck_argv, load_compose, localize
from localstack.processes import LOCALHOST, Process, base_env, free_port, http_ok, wait_until
from localstack.stack import MlflowServer, Stack

__all__ = ["COMPOSE_FILE", "DOCKERFILE", "LOCALHOST", "REPO", "Localized", "MlflowServer", "Process", "Stack",
           "base_env", "free_port", "healthcheck_argv", "http_ok", "load_compose", "localize", "wait_until"]
