"""The Pareto table of a set of finished trials, computed once and read by everything that shows a front.

Pure (no I/O, no ray, no mlflow). A configuration is a trial less its seed: its seeds are summarised by their
mean and 95% t-interval, and fronts are drawn on these means, since one seed is one draw of a noisy result. Fronts
are per group (domain set x backbone): costs of different backbones or domain sets are not comparable. The plots,
the CSV, the front's markdown and MLflow table, the ``pareto_optimal`` tags and the summary metrics all read one
``ParetoTable``, so one publish computes it once.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, Dict, Iterable, List, Mapping, Tuple

from bap import metrics as M
from orchestrator.pareto import group_points, is_optimal_by_group
from orchestrator.stats import mean_ci
from orchestrator.trial_keys import BACKBONE, BUDGET, DOMAIN_SET, METHOD

ACCURACY = M.ACC_MEAN
COSTS = {"params": M.PARAMS_RATIO, "macs": M.MACS_RATIO}  # cost name -> record key; a front per cost
CONFIGURATION = (DOMAIN_SET, BACKBONE, METHOD, BUDGET)  # a trial's seeds repeat one configuration
SUMMARISED = (ACCURACY, M.PARAMS_RATIO, M.MACS_RATIO)


def front_accuracy(record: Mapping[str, Any]) -> Any:
    """Accuracy as the front sees it: None (never optimal) for a trial whose final budget projection was heavy
    (``projection_heavy``), since its accuracy is not what training produced."""
    return None if record.get(M.PROJECTION_HEAVY) else record.get(ACCURACY)


def group_key(record: Mapping[str, Any]) -> Tuple[str, str]:
    return (str(record[DOMAIN_SET]), str(record[BACKBONE]))


def complete(record: Mapping[str, Any], cost_key: str) -> bool:
    """Whether ``record`` has both an accuracy and the cost ``cost_key`` (a failed trial has neither)."""
    values = (record.get(ACCURACY), record.get(cost_key))
    return all(v is not None and not math.isnan(float(v)) for v in values)


def configuration_key(record: Mapping[str, Any]) -> tuple:
    return tuple(record[k] for k in CONFIGURATION)


class ParetoTable:
    """``records`` (trial records, ``front.run_record``'s keys) and what they imply, each computed on first use.

    ``configurations``: one point per configuration: the mean over its complete trials of accuracy and costs,
    ``<key>_low`` / ``<key>_high`` their 95% t-interval (None from a single seed), ``seeds`` the count.
    ``rows``: the records with ``pareto_params`` / ``pareto_macs`` flags (their configuration's mean is on its
    group's front), its configuration's ``seeds`` and mean and interval columns, sorted by group, params ratio,
    run id."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.records: List[Mapping[str, Any]] = list(records)

    @cached_property
    def configurations(self) -> List[Dict[str, Any]]:
        points = []
        for key, members in group_points(self.records, configuration_key).items():
            done = [r for r in members if complete(r, M.PARAMS_RATIO)]
            point: Dict[str, Any] = dict(zip(CONFIGURATION, key), seeds=len(done),
                                         projection_heavy=any(r.get(M.PROJECTION_HEAVY) for r in members))
            for name in SUMMARISED:
                values = [float(r[name]) for r in done if r.get(name) is not None]
                mean, low, high = mean_ci(values) if values else (None, None, None)
                point[name] = mean
                point[f"{name}_low"], point[f"{name}_high"] = (low, high) if len(values) > 1 else (None, None)
            points.append(point)
        return points

    @cached_property
    def rows(self) -> List[Dict[str, Any]]:
        points = self.configurations
        by_key = {configuration_key(p): p for p in points}
        rows = []
        for record in self.records:
            point = by_key[configuration_key(record)]
            row = dict(record, seeds=point["seeds"])
            for name in SUMMARISED:
                row[f"{name}_mean"], row[f"{name}_low"], row[f"{name}_high"] = (
                    point[name], point[f"{name}_low"], point[f"{name}_high"])
            rows.append(row)
        for cost, key in COSTS.items():
            flags = dict(zip(map(configuration_key, points),
                             is_optimal_by_group(points, group_key, front_accuracy, key)))
            for row in rows:
                row[f"pareto_{cost}"] = flags[configuration_key(row)] and complete(row, key)
        missing = math.inf
        rows.sort(key=lambda r: (group_key(r), r.get(M.PARAMS_RATIO) if r.get(M.PARAMS_RATIO) is not None else missing,
                                 str(r.get("run_id"))))
        return rows
