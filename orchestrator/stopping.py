"""``scheduler=pareto``: stop a trial once, at equal training, a finished trial of its group was clearly better.

A Ray Tune ``TrialScheduler`` (FIFO order, so it composes with the grid and with a searcher). Each per-epoch result
is a point: the validation mean accuracy and the pruned size the trial would have if it ended now (``bap``'s
per-epoch ``params_ratio``: the current masks projected to the budget, as the final projection does). From epoch
``grace_period`` on, a trial stops when a finished trial of the same backbone and domain set was, at the same
epoch, at least ``margin`` accuracy points better at no higher cost: the front it is compared with is that of the
finished trials' points at that epoch. Comparing with their final accuracies instead would stop every trial that
has simply not trained yet.

A stopped trial keeps no result a finished one would: the sweep records it KILLED with a ``bap.stopped_early``
tag, and a searcher is told it was pruned. Trials flagged ``projection_heavy`` stay off the fronts, as they do
off the sweep's. The curves live in this object only: after a restore, trials finished before it are not compared
against (the scheduler then stops less, never more).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from bap import metrics as M
from orchestrator.config import domain_set_name
from orchestrator.pareto import pareto_front

log = logging.getLogger(__name__)
Point = Tuple[float, float]  # (accuracy, cost)


def dominated_by(point: Point, front: List[Point], margin: float) -> Point | None:
    """The first point of ``front`` at least ``margin`` accuracy points better than ``point`` at no higher cost."""
    accuracy, cost = point
    for other in front:
        if other[0] >= accuracy + margin and other[1] <= cost:
            return other
    return None


def group_of(trial: Trial) -> Tuple[str, str]:
    return trial.config["backbone"], domain_set_name(trial.config["domains"])


class ParetoStopping(FIFOScheduler):
    """Stops a trial whose (``val/acc_mean``, projected ``cost``) at an epoch >= ``grace_period`` is dominated, by
    ``margin`` accuracy points, by the point of a finished trial of its group at that epoch."""

    def __init__(self, grace_period: int, margin: float, cost: str = M.PARAMS_RATIO) -> None:
        super().__init__()
        self.grace_period, self.margin, self.cost = grace_period, margin, cost
        self._curves: Dict[str, Dict[int, Point]] = {}  # running trial id -> epoch -> its point
        self._fronts: Dict[Tuple[str, str], Dict[int, List[Point]]] = {}  # group -> epoch -> finished trials' front

    def on_trial_result(self, tune_controller, trial: Trial, result: Dict) -> str:
        if result.get("final"):  # the pruned model's result: the trial is done
            return TrialScheduler.CONTINUE
        epoch = int(result["epoch"])
        point = (float(result[M.VAL_ACC_MEAN]), float(result[self.cost]))
        self._curves.setdefault(trial.trial_id, {})[epoch] = point
        if epoch < self.grace_period:
            return TrialScheduler.CONTINUE
        better = dominated_by(point, self._fronts.get(group_of(trial), {}).get(epoch, []), self.margin)
        if better is None:
            return TrialScheduler.CONTINUE
        log.info("stopping trial %s at epoch %d: val/acc_mean %.2f at %s %.3f; a finished trial was at %.2f, %.3f "
                 "at that epoch (margin %g)", trial.trial_id, epoch, point[0], self.cost, point[1], *better,
                 self.margin)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial: Trial, result: Dict) -> None:
        curve = self._curves.pop(trial.trial_id, {})
        if not result.get("final") or result.get(M.PROJECTION_HEAVY):
            return
        fronts = self._fronts.setdefault(group_of(trial), {})
        for epoch, point in curve.items():
            fronts[epoch] = pareto_front([*fronts.get(epoch, []), point], lambda p: p[0], lambda p: p[1])

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._curves.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return (f"Pareto stopping: from epoch {self.grace_period}, a trial {self.margin:g} accuracy points behind a "
                f"finished one at the same epoch and no more {self.cost} stops.")
