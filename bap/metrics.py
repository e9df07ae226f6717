"""Accuracy, the Visual Decathlon score, efficiency ratios and the metric keys shared by Tune and MLflow.

Pure functions: no ray, mlflow or hydra. Accuracies are **percent** (0..100) everywhere, as the papers' tables
and METHOD 8's baselines are. The key constants are the single source of the strings that Tune reports, that
Tune's scheduler ``metric=`` names and that MLflow stores, so the three cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional

import torch

__all__ = [
    "ACC_MEAN",
    "ACC_MEAN_BEFORE_PROJECTION",
    "FRONT_SIZE",
    "BUDGET_TARGET",
    "BUDGET_MET",
    "DECATHLON_BASELINE",
    "DECATHLON_SCORE",
    "LOSS_SHARING",
    "MACS_MEAN",
    "MACS_RATIO",
    "OVERLAP",
    "PARAMS_CONV",
    "PARAMS_CONV_RATIO",
    "PARAMS_RATIO",
    "PARAMS_TOTAL",
    "PROJECTION_HEAVY",
    "SCORE_PER_MACS_RATIO",
    "SCORE_PER_PARAMS_RATIO",
    "SHARING_WEIGHT",
    "SWITCHES",
    "TRIALS_FAILED",
    "TRIALS_FINISHED",
    "TRIALS_STOPPED",
    "UNION_FRACTION",
    "VAL_ACC_MEAN",
    "acc_key",
    "accuracy",
    "best_acc_key",
    "budget_usage_key",
    "decathlon_score",
    "efficiency",
    "hypervolume_key",
    "loss_key",
    "macs_key",
    "mean_accuracy",
    "projected_off_key",
    "projected_share_key",
    "scored_domains",
    "val_acc_key",
]

# Final metrics of a trial (the pruned model, after the budget projection of METHOD 2).
ACC_MEAN = "acc_mean"  # mean over domains of top-1 val accuracy, percent
PARAMS_TOTAL = "params_total"  # multi-domain pruned model: shared convs once + every domain's BN, head, mask bits
PARAMS_CONV = "params_conv"  # conv weights only
PARAMS_CONV_RATIO = "params_conv_ratio"  # PARAMS_CONV / the backbone's conv weights
SWITCHES = "switches"  # switch bits stored: one per input channel of a switched conv, per domain
PARAMS_RATIO = "params_ratio"  # PARAMS_TOTAL / single-domain backbone (conv + one BN set + one head)
MACS_MEAN = "macs_mean"  # mean over domains of MACs per image at the domain's input size
MACS_RATIO = "macs_ratio"  # MACS_MEAN / the backbone's MACs
UNION_FRACTION = "union_fraction"  # cost of the union of used channels / cost of all switched channels
OVERLAP = "overlap"  # sum_d budget_usage_d / union_fraction: mean number of domains per used unit of cost
BUDGET_MET = "budget_met"  # 1.0 when every domain's usage <= budget (always, after projection)
ACC_MEAN_BEFORE_PROJECTION = "acc_mean_before_projection"  # the trained masks, before the final projection
# 1.0 when the projection turned off more than budget.heavy_projection of some domain's budget: the front
# leaves such trials out unless asked, since their accuracy is not what training produced.
PROJECTION_HEAVY = "projection_heavy"
# Computed on the val split; published Decathlon scores come from the test server, so the name says which.
DECATHLON_SCORE = "decathlon_score_val"
SCORE_PER_PARAMS_RATIO = "score_per_params_ratio"
SCORE_PER_MACS_RATIO = "score_per_macs_ratio"

# Per-epoch metrics. ASHA stops trials on VAL_ACC_MEAN, so it must be reported every epoch.
VAL_ACC_MEAN = "val/acc_mean"
LOSS_SHARING = "loss/sharing"
SHARING_WEIGHT = "sharing_weight"  # the effective weight; changes over training when it is `learnable`
BUDGET_TARGET = "budget_target"  # the usage each domain may have at this point of the budget's annealing


# A sweep's summary on its parent run, logged as trials finish with step = trials finished (so MLflow draws curves).
TRIALS_FINISHED = "sweep/trials_finished"  # trials with final, pruned-model metrics
TRIALS_FAILED = "sweep/trials_failed"
TRIALS_STOPPED = "sweep/trials_stopped"  # stopped early by the scheduler: neither finished nor failed
FRONT_SIZE = "sweep/front_size"  # configurations on the accuracy-vs-parameters fronts, all groups together


def _keyed(prefix: str, doc: str) -> Callable[[str], str]:
    def key(name: str) -> str:
        return f"{prefix}/{name}"

    key.__doc__ = doc
    return key


# Per-domain (or per-term) keys: ``acc_key("dtd") == "acc/dtd"``.
acc_key = _keyed("acc", "Final top-1 accuracy of a domain (the pruned model), percent.")
val_acc_key = _keyed("val/acc", "Top-1 validation accuracy of a domain after an epoch, percent.")
budget_usage_key = _keyed("budget_usage", "A domain's hard-mask usage of the backbone, in the budget's unit.")
loss_key = _keyed("loss", "``loss/<name>``, e.g. ``loss_key(\"ce/dtd\")``; the sharing term has a constant.")
macs_key = _keyed("macs", "MACs per image of a domain in the pruned model.")
projected_off_key = _keyed("projected_off", "Switches the post-training projection turned off for a domain "
                                            "(METHOD 2 asks to report it).")
hypervolume_key = _keyed("hypervolume", "A group's (``backbone/domain set``) accuracy-vs-params_ratio front "
                                          "hypervolume against orchestrator.pareto.HV_REFERENCE, on a sweep's parent.")
best_acc_key = _keyed("best_acc", "Best configuration-mean ACC_MEAN at a budget (``best_acc/b0.5``), on a sweep's "
                                  "parent.")
projected_share_key = _keyed("projected_share", "Share of a domain's budget (in the budget's unit) the final "
                                                "projection turned off.")


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy in percent of ``logits[N, C]`` against integer ``targets[N]``."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, C]; got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be [N]={logits.shape[0]} labels; got shape {tuple(targets.shape)}")
    if targets.numel() == 0:
        raise ValueError("accuracy of an empty batch is undefined; check that the split has samples")
    correct = (logits.argmax(dim=1) == targets).sum().item()
    return 100.0 * correct / targets.numel()


def mean_accuracy(per_domain: Mapping[str, float]) -> float:
    """Unweighted mean over domains, as the papers report it (a small domain counts as much as a big one)."""
    if not per_domain:
        raise ValueError("mean_accuracy needs at least one domain's accuracy")
    return sum(per_domain.values()) / len(per_domain)


# METHOD 8: top-1 accuracy (%) of the Decathlon baseline on each domain's val split.
DECATHLON_BASELINE: Mapping[str, float] = {
    "imagenet12": 59.87,
    "aircraft": 60.34,
    "cifar100": 82.12,
    "daimlerpedcls": 92.82,
    "dtd": 55.53,
    "gtsrb": 97.53,
    "vgg-flowers": 81.41,
    "omniglot": 87.69,
    "svhn": 96.55,
    "ucf101": 51.20,
}


def scored_domains(accuracy: Mapping[str, float], baselines: Mapping[str, float] = DECATHLON_BASELINE) -> list:
    """Domains of ``accuracy`` that have a baseline: a caller checks this to omit the score instead of catching."""
    return sorted(d for d in accuracy if d in baselines)


def decathlon_score(accuracy: Mapping[str, float], baselines: Mapping[str, float] = DECATHLON_BASELINE) -> float:
    """Visual Decathlon score S over the domains that have a baseline (others are ignored).

    ``S = sum_d alpha_d * max(0, Emax_d - E_d)^2`` with ``alpha_d = 1000 / Emax_d^2``, ``Emax_d = 2 * Ebase_d``
    and errors as fractions, so each domain is worth at most 1000 and scores 250 at its baseline.
    ``accuracy`` is percent per domain. Raises ``ValueError`` when no domain has a baseline: METHOD 8 omits the
    score then, and a silent 0 would look like a real (terrible) result.
    """
    domains = scored_domains(accuracy, baselines)
    if not domains:
        raise ValueError(
            f"no Decathlon baseline for any of the domains {sorted(accuracy)}; known: {', '.join(baselines)}. "
            "Omit the score (check scored_domains() first) or pass baselines= for these domains"
        )
    score = 0.0
    for domain in domains:
        acc, base = float(accuracy[domain]), float(baselines[domain])
        if not 0.0 <= acc <= 100.0:
            raise ValueError(f"accuracy[{domain!r}]={acc} is outside [0, 100]; accuracies are percent, not fractions")
        if not 0.0 <= base < 100.0:
            raise ValueError(f"baselines[{domain!r}]={base} must be in [0, 100) so the baseline error is > 0")
        error, error_max = 1.0 - acc / 100.0, 2.0 * (1.0 - base / 100.0)
        score += 1000.0 / error_max**2 * max(0.0, error_max - error) ** 2
    return score


def efficiency(score: Optional[float], params_ratio: float, macs_ratio: float) -> Dict[str, float]:
    """``S / params_ratio`` and ``S / macs_ratio`` (ratios against the single-domain backbone).

    BA² reports S per parameter and per operation; BAP's own efficiency metric could not be confirmed
    (METHOD 8), so these are named for what they compute and are **not** the paper's metric.
    ``score=None`` (no domain has a baseline) gives an empty dict.
    """
    if score is None:
        return {}
    for name, ratio in (("params_ratio", params_ratio), ("macs_ratio", macs_ratio)):
        if not (ratio > 0 and math.isfinite(ratio)):
            raise ValueError(f"{name}={ratio} must be a finite number > 0 to divide the score by it")
    return {SCORE_PER_PARAMS_RATIO: score / params_ratio, SCORE_PER_MACS_RATIO: score / macs_ratio}
