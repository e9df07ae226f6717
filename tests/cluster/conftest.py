"""Fixtures of the cluster tests: one compose stack (as local processes) per module, torn down even on failure."""

from __future__ import annotations

import os
import uuid

import pytest

from localstack import Stack

# MLflow's PostgreSQL backend, as the compose stack runs it; .ci/run starts Debian's postgresql and sets it.
POSTGRES_ENV = "BAP_TEST_POSTGRES_URI"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Ray head (no CPUs, as in compose) + two one-CPU workers + MLflow, on PostgreSQL as in compose when
    $BAP_TEST_POSTGRES_URI names a server, else on SQLite; every service port on 127.0.0.1."""
    s = Stack(tmp_path_factory.mktemp("stack"), workers=2, mlflow_backend_uri=os.environ.get(POSTGRES_ENV))
    try:
        s.start()
    except BaseException:
        print(s.logs())
        s.stop()
        raise
    yield s
    s.stop()


@pytest.fixture
def experiment():
    """A fresh experiment name: the PostgreSQL database outlives a test run."""
    return f"cluster-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed cluster test, print the tails of every service's log."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "stack" in item.fixturenames:
        s = item.funcargs.get("stack")
        if s is not None:
            report.sections.append(("cluster logs", s.logs()))
