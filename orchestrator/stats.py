"""Uncertainty over seeds: means with t-intervals and bootstrap intervals of any statistic (no ray, no mlflow).

A method result on the embedded data moves 5-7 points from seed to seed (METHOD 10), so every number a study or a
front reports comes with a 95% interval over seeds.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean; a single value has an infinite interval, not a fake one."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) == 1:
        return mean, -math.inf, math.inf
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_units: int,
    resamples: int = 2000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high) of ``statistic(units)`` where ``units`` indexes ``n_units`` seeds: the percentile
    bootstrap over seeds (units drawn with replacement). Pass one function that computes every compared quantity
    from the same draw to get a paired interval of a difference."""
    rng = np.random.default_rng(seed)
    estimate = statistic(np.arange(n_units))
    draws = np.array([statistic(rng.integers(0, n_units, n_units)) for _ in range(resamples)], dtype=float)
    draws = draws[~np.isnan(draws)]
    if len(draws) == 0:
        return estimate, math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return estimate, float(low), float(high)
