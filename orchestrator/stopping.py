"""``scheduler=pareto``: stop a trial once its point is clearly dominated by what its group already finished.

A Ray Tune ``TrialScheduler`` (FIFO order, so it composes with the grid and with a searcher). After
``grace_period`` epochs, each per-epoch result is a point: the validation mean accuracy and the pruned size the
trial would have if it ended now (``bap``'s per-epoch ``params_ratio`` / ``macs_ratio``: the current masks
projected to the budget, as the final projection does). A finished trial of the same backbone and domain set
dominates that point by the margin when it is at least ``margin`` accuracy points better at no higher cost; the
trial is then stopped. It keeps no result a finished trial would: the sweep records it KILLED with a
``bap.stopped_early`` tag, and a searcher is told it was pruned.

The accuracy compared is optimistic for the running trial (before the budget has annealed it still computes
with more channels than it will keep), so a stopped trial is one that was behind even so.
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
    """Stops a trial whose (``val/acc_mean``, projected ``cost``) is dominated by ``margin`` accuracy points by a
    finished trial of its group, from epoch ``grace_period`` on. Finished trials are those whose final result
    (``final``) came in; trials flagged ``projection_heavy`` stay off the front, as they do in the sweep's."""

    def __init__(self, grace_period: int, margin: float, cost: str = M.PARAMS_RATIO) -> None:
        super().__init__()
        self.grace_period, self.margin, self.cost = grace_period, margin, cost
        self._fronts: Dict[Tuple[str, str], List[Point]] | None = None  # group -> its finished trials' front

    def on_trial_result(self, tune_controller, trial: Trial, result: Dict) -> str:
        if result.get("final") or result.get("epoch", 0) < self.grace_period:
            return TrialScheduler.CONTINUE
        point = (float(result[M.VAL_ACC_MEAN]), float(result[self.cost]))
        better = dominated_by(point, self._front(tune_controller, trial), self.margin)
        if better is None:
            return TrialScheduler.CONTINUE
        log.info("stopping trial %s at epoch %d: val/acc_mean %.2f at %s %.3f; a finished trial reached %.2f at "
                 "%.3f (margin %g)", trial.trial_id, result["epoch"], point[0], self.cost, point[1], *better,
                 self.margin)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial: Trial, result: Dict) -> None:
        self._front(tune_controller, trial)
        self._add(trial, result)

    def _front(self, tune_controller, trial: Trial) -> List[Point]:
        if self._fronts is None:  # first call, or after a restore: the trials Tune already has finished
            self._fronts = {}
            for done in tune_controller.get_trials():
                if done.status == Trial.TERMINATED:
                    self._add(done, done.last_result or {})
        return self._fronts.get(group_of(trial), [])

    def _add(self, trial: Trial, result: Dict) -> None:
        if not result.get("final") or result.get(M.PROJECTION_HEAVY) or M.ACC_MEAN not in result:
            return
        group = group_of(trial)
        points = [*self._fronts.get(group, []), (float(result[M.ACC_MEAN]), float(result[self.cost]))]
        self._fronts[group] = pareto_front(points, accuracy=lambda p: p[0], cost=lambda p: p[1])

    def debug_string(self) -> str:
        return (f"Pareto stopping: after {self.grace_period} epoch(s), a trial {self.margin:g} accuracy points "
                f"behind a finished one at no more {self.cost} stops.")
