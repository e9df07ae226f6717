import pytest

from benchmarks.large_sweep import slope


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 0.5])
def test_growth_exponent_of_an_exact_power_law(exponent):
    rows = [{"N": n, "cost": 3.0 * n ** exponent} for n in (100, 300, 1000)]
    assert slope(rows, "cost") == pytest.approx(exponent)
