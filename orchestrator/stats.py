"""Uncertainty over seeds: means with Student t-intervals (no ray, no mlflow).

A method result on the embedded data moves 5-7 points from seed to seed (METHOD 10), so every number a study or a
front reports comes with a 95% interval over seeds; a comparison is a mean of paired differences, one per
(draw, seed), with its t-interval (a percentile bootstrap over 5 seeds covered about 84%, not 95%).
"""

from __future__ import annotations

import math
from typing import Sequence

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
