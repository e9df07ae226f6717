"""scheduler=pareto (orchestrator.stopping.ParetoStopping): its decisions on scripted trial results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from bap import metrics as M
from orchestrator.stopping import ParetoStopping, dominated_by

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def trial(trial_id, domains=None, backbone="resnet26", status=Trial.RUNNING, last_result=None):
    return SimpleNamespace(trial_id=trial_id, config={"backbone": backbone, "domains": domains}, status=status,
                           last_result=last_result)


def final(acc, cost, heavy=0.0):
    return {M.ACC_MEAN: acc, M.PARAMS_RATIO: cost, M.VAL_ACC_MEAN: acc, M.PROJECTION_HEAVY: heavy, "final": 1.0,
            "epoch": 4}


def epoch(n, acc, cost):
    return {"epoch": n, M.VAL_ACC_MEAN: acc, M.PARAMS_RATIO: cost}


class Controller:
    def __init__(self, *trials):
        self.trials = list(trials)

    def get_trials(self):
        return self.trials


def scheduler_with(controller, *finished, grace_period=2, margin=2.0):
    """A scheduler that has seen ``finished`` (trial, final result) pairs complete."""
    scheduler = ParetoStopping(grace_period=grace_period, margin=margin)
    for done, result in finished:
        scheduler.on_trial_complete(controller, done, result)
    return scheduler


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


def test_no_trial_stops_before_its_grace_period_or_on_its_final_result():
    controller = Controller()
    scheduler = scheduler_with(controller, (trial("a"), final(80.0, 0.3)))
    running = trial("b")
    assert scheduler.on_trial_result(controller, running, epoch(1, 10.0, 0.9)) == CONTINUE  # grace_period=2
    assert scheduler.on_trial_result(controller, running, final(10.0, 0.9)) == CONTINUE
    assert scheduler.on_trial_result(controller, running, epoch(2, 10.0, 0.9)) == STOP


def test_only_finished_trials_of_the_same_group_count():
    controller = Controller()
    scheduler = scheduler_with(
        controller,
        (trial("other-set", domains=["dtd", "svhn"]), final(90.0, 0.3)),
        (trial("other-backbone", backbone="resnet50"), final(90.0, 0.3)),
        (trial("heavy"), final(90.0, 0.3, heavy=1.0)),  # left off the front, as in the sweep's
        (trial("stopped"), epoch(2, 90.0, 0.3)),  # stopped early itself: no final result
    )
    assert scheduler.on_trial_result(controller, trial("b"), epoch(3, 50.0, 0.5)) == CONTINUE
    same_set = trial("c", domains=["dtd", "svhn"])
    assert scheduler.on_trial_result(controller, same_set, epoch(3, 50.0, 0.5)) == STOP


def test_the_front_grows_with_each_finished_trial_and_dominated_ones_drop_off():
    controller = Controller()
    scheduler = scheduler_with(controller, (trial("a"), final(60.0, 0.5)))
    assert scheduler.on_trial_result(controller, trial("b"), epoch(2, 61.0, 0.8)) == CONTINUE
    scheduler.on_trial_complete(controller, trial("c"), final(70.0, 0.4))  # dominates a
    assert scheduler.on_trial_result(controller, trial("b"), epoch(2, 61.0, 0.8)) == STOP
    assert scheduler._fronts[("resnet26", "all")] == [(70.0, 0.4)]


def test_a_restored_sweep_starts_from_the_trials_tune_already_finished():
    finished = trial("a", status=Trial.TERMINATED, last_result=final(80.0, 0.3))
    killed = trial("k", status=Trial.TERMINATED, last_result=epoch(2, 95.0, 0.1))  # stopped: no final result
    controller = Controller(finished, killed)
    scheduler = ParetoStopping(grace_period=1, margin=2.0)  # as Tune restores it: empty
    assert scheduler.on_trial_result(controller, trial("b"), epoch(1, 50.0, 0.3)) == STOP
    assert scheduler.on_trial_result(controller, trial("b"), epoch(1, 50.0, 0.29)) == CONTINUE
