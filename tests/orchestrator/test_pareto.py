import math
from typing import NamedTuple

import pytest

from orchestrator.pareto import (
    hypervolume, is_optimal, is_optimal_by_group, pareto_front, pareto_front_by_group,
)
from orchestrator.stats import mean_ci


class Pt(NamedTuple):
    key: str
    accuracy: float
    cost: float


def keys(points):
    return [p.key for p in points]


def test_front_of_a_simple_set_sorted_by_cost():
    pts = [Pt("b", 80, 2.0), Pt("a", 70, 1.0), Pt("dominated", 75, 2.5), Pt("c", 90, 3.0)]
    assert keys(pareto_front(pts)) == ["a", "b", "c"]
    assert is_optimal(pts) == [True, True, False, True]


def test_equal_cost_keeps_only_the_more_accurate():
    pts = [Pt("lo", 70, 1.0), Pt("hi", 80, 1.0)]
    assert keys(pareto_front(pts)) == ["hi"]


def test_equal_accuracy_keeps_only_the_cheaper():
    pts = [Pt("dear", 80, 2.0), Pt("cheap", 80, 1.0)]
    assert keys(pareto_front(pts)) == ["cheap"]


def test_exact_duplicates_are_all_on_the_front_in_input_order():
    pts = [Pt("x2", 80, 1.0), Pt("y", 90, 2.0), Pt("x1", 80, 1.0), Pt("z", 60, 1.5)]
    assert keys(pareto_front(pts)) == ["x2", "x1", "y"]
    assert is_optimal(pts) == [True, True, True, False]


def test_duplicates_that_are_dominated_are_all_off_the_front():
    pts = [Pt("d1", 70, 2.0), Pt("d2", 70, 2.0), Pt("best", 75, 1.0)]
    assert is_optimal(pts) == [False, False, True]


def test_result_does_not_depend_on_input_order_except_among_duplicates():
    pts = [Pt("a", 70, 1.0), Pt("b", 80, 2.0), Pt("c", 79, 2.0), Pt("d", 85, 3.5), Pt("e", 84, 4.0)]
    assert keys(pareto_front(pts)) == keys(pareto_front(list(reversed(pts)))) == ["a", "b", "d"]


def test_missing_values_are_never_optimal_and_dominate_nothing():
    pts = [Pt("nan", math.nan, 0.1), {"key": "none", "accuracy": 99.0, "cost": None}, Pt("ok", 50, 1.0)]
    assert is_optimal(pts, "accuracy", "cost") == [False, False, True]


def test_dicts_and_callables_as_accessors():
    recs = [{"id": 1, "acc_mean": 70, "params_ratio": 0.5}, {"id": 2, "acc_mean": 60, "params_ratio": 0.6}]
    assert [r["id"] for r in pareto_front(recs, "acc_mean", "params_ratio")] == [1]
    assert is_optimal(recs, lambda r: r["acc_mean"], lambda r: -r["params_ratio"]) == [True, True]


def test_empty_input():
    assert pareto_front([]) == [] and is_optimal([]) == []


def test_per_group_fronts_are_independent():
    pts = [
        {"g": "A", "accuracy": 80, "cost": 1.0, "k": "a1"},
        {"g": "B", "accuracy": 60, "cost": 2.0, "k": "b1"},  # dominated by a1, but in another group
        {"g": "A", "accuracy": 70, "cost": 1.5, "k": "a2"},
        {"g": "B", "accuracy": 65, "cost": 3.0, "k": "b2"},
    ]
    fronts = pareto_front_by_group(pts, "g")
    assert list(fronts) == ["A", "B"]
    assert [p["k"] for p in fronts["A"]] == ["a1"]
    assert [p["k"] for p in fronts["B"]] == ["b1", "b2"]
    assert is_optimal_by_group(pts, lambda p: p["g"]) == [True, True, False, True]


def _pt(acc, cost):
    return {"accuracy": acc, "cost": cost}


def test_hypervolume_of_hand_made_fronts():
    ref = {"cost": 1.0, "accuracy": 0.0}
    assert hypervolume([_pt(50, 0.5)], reference=ref) == pytest.approx(25.0)
    # staircase: (0.2, 40) then (0.6, 60): 0.4 * 40 + 0.4 * 60
    assert hypervolume([_pt(40, 0.2), _pt(60, 0.6)], reference=ref) == pytest.approx(40.0)
    # a dominated point, an exact duplicate and a tie in cost add nothing
    assert hypervolume([_pt(40, 0.2), _pt(60, 0.6), _pt(30, 0.7), _pt(60, 0.6), _pt(35, 0.2)],
                       reference=ref) == pytest.approx(40.0)
    # beyond the reference (too costly, or below its accuracy) and invalid points add nothing
    assert hypervolume([_pt(40, 0.2), _pt(99, 1.0), _pt(-5, 0.1), _pt(None, 0.1), _pt(float("nan"), 0.1)],
                       reference=ref) == pytest.approx(32.0)
    assert hypervolume([], reference=ref) == 0.0


def test_mean_ci_is_students_t_interval():
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 4.302653 / 3 ** 0.5) and high == pytest.approx(2 + 4.302653 / 3 ** 0.5)
    assert mean_ci([5.0])[1:] == (float("-inf"), float("inf"))
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0
