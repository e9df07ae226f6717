import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fail_fast_http(monkeypatch):
    """The process-wide MLflow HTTP setting every entry point and trial worker opts in to, for code the tests call
    in-process (and restored after each test)."""
    from orchestrator.tracking import FAIL_FAST_HTTP

    for key, value in FAIL_FAST_HTTP.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
