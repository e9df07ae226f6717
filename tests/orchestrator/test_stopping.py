"""scheduler=pareto (orchestrator.stopping.ParetoStopping): its decisions on scripted trial results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from bap import metrics as M
from orchestrator.stopping import ParetoStopping, dominated_by

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
CONTROLLER = None  # the scheduler never reads Tune's controller


def trial(trial_id, domains=None, backbone="resnet26"):
    return SimpleNamespace(trial_id=trial_id, config={"backbone": backbone, "domains": domains})


def epoch(n, acc, cost):
    return {"epoch": n, M.VAL_ACC_MEAN: acc, M.PARAMS_RATIO: cost}


def final(acc=50.0, cost=0.5, heavy=0.0):
    return {M.ACC_MEAN: acc, M.PARAMS_RATIO: cost, M.VAL_ACC_MEAN: acc, M.PROJECTION_HEAVY: heavy, "final": 1.0}


def finish(scheduler, done, curve, last=None):
    """``done`` reports ``curve`` (epoch -> (acc, cost)), then its final result, and completes."""
    for n, (acc, cost) in curve.items():
        assert scheduler.on_trial_result(CONTROLLER, done, epoch(n, acc, cost)) == CONTINUE
    last = last or final()
    assert scheduler.on_trial_result(CONTROLLER, done, last) == CONTINUE
    scheduler.on_trial_complete(CONTROLLER, done, last)


@pytest.mark.parametrize("point, stopped", [
    ((57.9, 0.5), True),  # 2.1 points behind at the same cost
    ((58.0, 0.5), True),  # exactly the margin
    ((58.1, 0.5), False),  # within the margin
    ((40.0, 0.49), False),  # cheaper than every finished trial: a new part of the front
    ((40.0, 0.9), True),  # dearer and worse
])
def test_a_point_is_stopped_only_when_a_finished_trial_beats_it_by_the_margin_at_no_higher_cost(point, stopped):
    front = [(60.0, 0.5), (70.0, 1.0)]
    assert (dominated_by(point, front, margin=2.0) is not None) is stopped


def test_trials_are_compared_at_the_same_epoch_never_before_the_grace_period():
    scheduler = ParetoStopping(grace_period=2, margin=2.0)
    finish(scheduler, trial("a"), {1: (30.0, 0.5), 2: (45.0, 0.5), 3: (50.0, 0.5)}, final(60.0, 0.5))
    b = trial("b")
    assert scheduler.on_trial_result(CONTROLLER, b, epoch(1, 10.0, 0.9)) == CONTINUE  # grace_period=2
    # At epoch 2, 44 is within the margin of a's 45: not a's final 60, which b has not had the epochs to reach.
    assert scheduler.on_trial_result(CONTROLLER, b, epoch(2, 44.0, 0.5)) == CONTINUE
    assert scheduler.on_trial_result(CONTROLLER, b, epoch(3, 47.0, 0.5)) == STOP
    assert scheduler.on_trial_result(CONTROLLER, trial("c"), final(1.0, 0.9)) == CONTINUE  # done anyway


def test_only_finished_trials_of_the_same_group_count():
    scheduler = ParetoStopping(grace_period=1, margin=2.0)
    strong = {1: (90.0, 0.3)}
    finish(scheduler, trial("other-set", domains=["dtd", "svhn"]), strong)
    finish(scheduler, trial("other-backbone", backbone="resnet50"), strong)
    finish(scheduler, trial("heavy"), strong, final(heavy=1.0))  # left off the front, as in the sweep's
    stopped = trial("stopped")  # stopped early itself: it completes without a final result
    scheduler.on_trial_result(CONTROLLER, stopped, epoch(1, 90.0, 0.3))
    scheduler.on_trial_complete(CONTROLLER, stopped, epoch(1, 90.0, 0.3))
    running = trial("running")
    scheduler.on_trial_result(CONTROLLER, running, epoch(1, 90.0, 0.3))  # reported, never finished
    assert scheduler.on_trial_result(CONTROLLER, trial("b"), epoch(1, 50.0, 0.5)) == CONTINUE
    same_set = trial("c", domains=["dtd", "svhn"])
    assert scheduler.on_trial_result(CONTROLLER, same_set, epoch(1, 50.0, 0.5)) == STOP


def test_each_epochs_front_grows_with_finished_trials_and_dominated_points_drop_off():
    scheduler = ParetoStopping(grace_period=1, margin=0.0)
    finish(scheduler, trial("a"), {1: (60.0, 0.5)})
    assert scheduler.on_trial_result(CONTROLLER, trial("b"), epoch(1, 61.0, 0.8)) == CONTINUE
    finish(scheduler, trial("c"), {1: (70.0, 0.4)})  # dominates a's point
    assert scheduler.on_trial_result(CONTROLLER, trial("b"), epoch(1, 61.0, 0.8)) == STOP
    assert scheduler._fronts[("resnet26", "all")] == {1: [(70.0, 0.4)]}
    assert set(scheduler._curves) == {"b"}  # finished trials' curves moved into the fronts
