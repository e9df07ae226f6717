"""Pareto front of (accuracy, cost) points: maximise accuracy, minimise cost (params or MACs).

Pure functions, no ray or mlflow, over any points: mappings or objects, read through a key name or a callable.

Dominance and ties (decided here, tested in tests/orchestrator/test_pareto.py):
- ``q`` dominates ``p`` when ``q`` is no worse in both (``acc_q >= acc_p`` and ``cost_q <= cost_p``) and strictly
  better in at least one. So of two points with equal cost only the more accurate is optimal, and of two with
  equal accuracy only the cheaper one.
- **Exact duplicates** (equal accuracy and equal cost) do not dominate each other: all of them are on the front
  or none is. Two seeds that land on the same point are equally good, and tagging only one would depend on
  the order runs finished in.
- Points whose accuracy or cost is None or NaN (a failed trial) are never optimal and dominate nothing.
- The front is returned sorted by cost, then accuracy (descending), then input order: deterministic, and the
  order a step plot is drawn in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Dict, Hashable, List, Mapping, Sequence, TypeVar, Union

P = TypeVar("P")
Getter = Union[str, Callable[[Any], Any]]


def _getter(get: Getter) -> Callable[[Any], Any]:
    if callable(get):
        return get
    return lambda p: p[get] if isinstance(p, Mapping) else getattr(p, get)


def _value(point: Any, get: Callable[[Any], Any]) -> float:
    value = get(point)
    return math.nan if value is None else float(value)


def is_optimal(points: Sequence[P], accuracy: Getter = "accuracy", cost: Getter = "cost") -> List[bool]:
    """One flag per point, in input order: True when no other point dominates it (see the module docstring)."""
    acc_of, cost_of = _getter(accuracy), _getter(cost)
    acc = [_value(p, acc_of) for p in points]
    cst = [_value(p, cost_of) for p in points]
    valid = [i for i in range(len(points)) if not (math.isnan(acc[i]) or math.isnan(cst[i]))]
    by_cost: Dict[float, List[int]] = defaultdict(list)
    for i in valid:
        by_cost[cst[i]].append(i)
    flags = [False] * len(points)
    best_cheaper = -math.inf  # best accuracy among strictly cheaper points
    for c in sorted(by_cost):
        group = by_cost[c]
        best_here = max(acc[i] for i in group)
        # Optimal: the most accurate at this cost, and more accurate than everything cheaper.
        if best_here > best_cheaper:
            for i in group:
                flags[i] = acc[i] == best_here
        best_cheaper = max(best_cheaper, best_here)
    return flags


def pareto_front(points: Sequence[P], accuracy: Getter = "accuracy", cost: Getter = "cost") -> List[P]:
    """The non-dominated points, sorted by cost, then accuracy descending, then input order."""
    acc_of, cost_of = _getter(accuracy), _getter(cost)
    flags = is_optimal(points, acc_of, cost_of)
    front = [i for i, flag in enumerate(flags) if flag]
    front.sort(key=lambda i: (_value(points[i], cost_of), -_value(points[i], acc_of), i))
    return [points[i] for i in front]


def group_points(points: Sequence[P], group: Getter) -> Dict[Hashable, List[P]]:
    """Points by ``group(point)``, groups in first-seen order, points in input order."""
    group_of = _getter(group)
    groups: Dict[Hashable, List[P]] = {}
    for p in points:
        groups.setdefault(group_of(p), []).append(p)
    return groups


def pareto_front_by_group(
    points: Sequence[P], group: Getter, accuracy: Getter = "accuracy", cost: Getter = "cost"
) -> Dict[Hashable, List[P]]:
    """``pareto_front`` within each group (e.g. domain set x backbone, whose costs are not comparable)."""
    return {key: pareto_front(members, accuracy, cost) for key, members in group_points(points, group).items()}


def is_optimal_by_group(
    points: Sequence[P], group: Getter, accuracy: Getter = "accuracy", cost: Getter = "cost"
) -> List[bool]:
    """``is_optimal`` within each group, one flag per point in input order: what an MLflow tag needs."""
    group_of = _getter(group)
    index: Dict[Hashable, List[int]] = defaultdict(list)
    for i, p in enumerate(points):
        index[group_of(p)].append(i)
    flags = [False] * len(points)
    for members in index.values():
        for i, flag in zip(members, is_optimal([points[i] for i in members], accuracy, cost)):
            flags[i] = flag
    return flags


# Hypervolume reference (accuracy up, cost down): worse than any point a sweep should produce, fixed so fronts of
# different sweeps of one experiment compare. Cost 1.5x the single-domain backbone (a multi-domain model of every
# channel sits near 1.0-1.1x), accuracy 0%.
HV_REFERENCE = {"cost": 1.5, "accuracy": 0.0}


def hypervolume(
    points: Sequence[P],
    accuracy: Getter = "accuracy",
    cost: Getter = "cost",
    reference: Mapping[str, float] = HV_REFERENCE,
) -> float:
    """Area of the (cost, accuracy) plane that the front dominates, bounded by ``reference``: larger is better.

    Points at or beyond the reference (cost >= its cost or accuracy <= its accuracy), and invalid ones, add
    nothing; duplicates and dominated points add nothing twice. Units: accuracy points x cost ratio.
    """
    acc_of, cost_of = _getter(accuracy), _getter(cost)
    ref_cost, ref_acc = float(reference["cost"]), float(reference["accuracy"])
    inside = [p for p in points if _value(p, cost_of) < ref_cost and _value(p, acc_of) > ref_acc]
    front = pareto_front(inside, acc_of, cost_of)  # cost ascending, so accuracy ascends along it
    area = 0.0
    for i, p in enumerate(front):
        next_cost = _value(front[i + 1], cost_of) if i + 1 < len(front) else ref_cost
        area += (next_cost - _value(p, cost_of)) * (_value(p, acc_of) - ref_acc)
    return area
