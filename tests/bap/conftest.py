import pytest

from tests.bap.helpers import tiny_domain


@pytest.fixture
def tiny_domains():
    return {"alpha": tiny_domain("alpha", 3, seed=1), "beta": tiny_domain("beta", 4, seed=2)}
