"""A trial's identity in MLflow: the keys its run is tagged with, written once by the trial and read back by the
front, the plots, the CSV and the Model Registry.

One home for these strings, so a record means the same wherever it is read. A run is tagged when its trial
starts, before anything else is logged, and the spool replays writes in order: a run with final metrics always has
its tags, so they are read without fallbacks.
"""

from __future__ import annotations

from typing import Any, Mapping

from orchestrator.config import domain_set_name

BUDGET = "budget"  # beta, the fraction of the backbone each domain may use
# The method: a sharing loss, none or a baseline (the sweep's `methods` axis). The tag keeps the name every
# recorded run, CSV and printed front already carries.
METHOD = "sharing"
BACKBONE = "backbone"
DOMAIN_SET = "domain_set"  # ``config.domain_set_name``: "all" or "dtd+svhn"
SEED = "seed"
TRIAL_KEYS = (BUDGET, METHOD, BACKBONE, DOMAIN_SET, SEED)
# One draw of data and backbone (METHOD 10): the trial's `data.seed` param (it also seeds the embedded pretraining),
# read back into a record under DRAW so a study pairs its trials by (draw, seed).
DRAW = "draw"
DRAW_PARAM = "data.seed"
# The keys a trial also logs as params under these short names (backbone and seed are there as model.backbone and
# train.seed already), so the UI's params filter finds them.
PARAM_KEYS = (BUDGET, METHOD, DOMAIN_SET)


def trial_tags(params: Mapping[str, Any]) -> dict[str, Any]:
    """The trial keys of a trial's Tune params (``config.AXES``), as its run is tagged."""
    return {BUDGET: params["budget"], METHOD: params["method"], BACKBONE: params["backbone"],
            DOMAIN_SET: domain_set_name(params["domains"]), SEED: params["seed"]}


def read_trial_keys(tags: Mapping[str, str], params: Mapping[str, str]) -> dict[str, Any]:
    """The trial keys of a run's tags, typed as ``trial_tags`` wrote them (MLflow keeps strings), and its draw."""
    return {DOMAIN_SET: tags[DOMAIN_SET], BACKBONE: tags[BACKBONE], METHOD: tags[METHOD],
            BUDGET: float(tags[BUDGET]), SEED: int(tags[SEED]), DRAW: int(params[DRAW_PARAM])}
