"""Up-front checks of a whole sweep, so a bad grid fails in the driver before any trial is scheduled.

Every problem is collected and reported at once (fixing one error per cluster submission is slow); each line
names the key, the bad value and the fix. The checks are cheap (no image is read): the trials' own data
loading still validates file contents.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

from bap.config import SHARING_OPTIONS
from bap.models import list_models
from orchestrator.config import (EMBEDDED_WEIGHTS, LOG_UNIFORM, SAMPLERS, SCHEDULERS, SEARCH_ALGORITHMS, SEARCH_COSTS,
                                 SweepConfig, SweepPlan)
from orchestrator.errors import ConfigError
from orchestrator.validate_files import check_files, check_storage

_ADDRESS_FIX = "connect to a bigger cluster (ray.address=... or RAY_ADDRESS)"


class SweepConfigError(ConfigError):
    """All problems of a sweep config; ``errors`` holds one message per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid sweep config:\n" + "\n".join(f"  - {e}" for e in self.errors))


def local_resources() -> Dict[str, float]:
    """What a local Ray would offer (``ray.cluster_resources()`` without starting Ray)."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def known_resources(cfg: SweepConfig) -> Optional[Dict[str, float]]:
    """The resources the sweep's Ray will have, if known before it starts: a local Ray's (``local_resources``); a
    cluster's are known once joined (``check_cluster``)."""
    return None if cfg.ray.address else local_resources()


def _check_axes(cfg: SweepConfig, errors: List[str]) -> None:
    for key in ("budgets", "backbones", "methods", "seeds"):
        values = getattr(cfg, key)
        if values is not None and len(values) == 0:
            errors.append(f"{key}=[] sweeps nothing; give at least one value, or null to use the fixed value")
        elif values is not None and len(set(values)) != len(values):
            errors.append(f"{key}={list(values)} repeats a value; list each value once")
    for beta in cfg.budgets or []:
        if not (isinstance(beta, (int, float)) and 0.0 < beta <= 1.0):
            errors.append(f"budgets has {beta}, outside (0, 1]; budgets are fractions of the backbone, 1.0 = unpruned")
    unknown = sorted({b for b in cfg.backbones or [] if b not in list_models()})
    if unknown:
        errors.append(f"backbones has unknown {', '.join(map(repr, unknown))}; known: {', '.join(list_models())}")
    unknown = sorted({s for s in cfg.methods or [] if s not in SHARING_OPTIONS})
    if unknown:
        errors.append(
            f"methods has unknown method(s) {', '.join(map(repr, unknown))}; known: {', '.join(SHARING_OPTIONS)}"
        )
    backbones = cfg.backbones or [cfg.model.backbone]
    if cfg.model.weights == EMBEDDED_WEIGHTS:
        if cfg.data.name != "embedded":
            errors.append(
                f"model.weights=embedded pretrains on the embedded data's source domain, but data={cfg.data.name}; "
                "give a local state-dict file (model.weights=/path/{backbone}.pt) or null"
            )
    elif cfg.model.weights and len(backbones) > 1 and "{backbone}" not in cfg.model.weights:
        errors.append(
            f"model.weights={cfg.model.weights} is one file for backbones {backbones}; "
            "put {backbone} in the path, e.g. model.weights=weights/{backbone}.pt"
        )


def _domain_sets(cfg: SweepConfig) -> List[Optional[List[str]]]:
    return [list(s) for s in cfg.domain_sets] if cfg.domain_sets else [cfg.data.domains]


def _check_domains(cfg: SweepConfig, errors: List[str]) -> List[str]:
    """Checks every named domain against the data set; returns the domains the sweep uses."""
    if cfg.domain_sets and cfg.data.domains is not None:
        errors.append(f"data.domains={list(cfg.data.domains)} is ignored when domain_sets is set (each domain set "
                      "replaces it); drop data.domains, or put its domains in domain_sets")
    for i, domains in enumerate(cfg.domain_sets or []):
        if not domains:
            errors.append(f"domain_sets[{i}]=[] names no domain; remove it, or leave domain_sets unset for all")
        elif len(set(domains)) != len(domains):
            errors.append(f"domain_sets[{i}]={list(domains)} repeats a domain; list each domain once")
    try:
        from bap.data import list_domains
    except ImportError as err:
        errors.append(f"cannot check domains: bap.data.list_domains is unavailable ({err})")
        return []
    known = list_domains(cfg.data)
    used: List[str] = []
    for domains in _domain_sets(cfg):
        used.extend(d for d in (known if domains is None else domains) if d not in used)
    unknown = [d for d in used if d not in known]
    if cfg.data.name == "imagenet_sketch" and cfg.data.root:
        # bap.data accepts any extra ImageFolder domain that exists on disk.
        unknown = [d for d in unknown if not os.path.isdir(os.path.join(cfg.data.root, d, "train"))]
    if unknown:
        key = "domain_sets" if cfg.domain_sets else "data.domains"
        errors.append(
            f"{key} has unknown {cfg.data.name} domain(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )
    return [d for d in used if d not in unknown]


# Below this many output channels a layer has nothing to prune or share: the budget cannot act on it.
MIN_CHANNELS = 2


def _check_model(plan: SweepPlan, errors: List[str]) -> None:
    """Model options against the layer names of each backbone the sweep builds (a narrow copy: same names), and
    a width that leaves every layer channels to prune (the backbone raises a layer rounded to 0 to 1 silently)."""
    from bap import build_model

    cfg = plan.cfg
    for backbone in plan.backbones:
        try:
            model = build_model(backbone, {"probe": 1}, width=min(cfg.model.width, 1 / 16),
                                unswitched=cfg.model.unswitched)
        except (ValueError, KeyError) as err:
            errors.append(f"model.unswitched={list(cfg.model.unswitched)}: {str(err).strip(chr(39))}")
            continue
        narrowest = min(m.out_channels for m in model.modules() if hasattr(m, "out_channels"))
        if narrowest < MIN_CHANNELS:
            errors.append(f"model.width={cfg.model.width:g} leaves {backbone} layers of {narrowest} channel(s), "
                          f"too few to prune (at least {MIN_CHANNELS}); use model.width=1.0 for the papers' "
                          "widths or e.g. 0.125 on CPU")


def _search_corners(plan: SweepPlan) -> List[dict]:
    """A search's extreme trials: every range at its low end, then at its high end, with each method."""
    fixed = {name: values[0] for name, values in plan.axes.items()}
    ranges = {name: d.values for name, d in plan.space.items() if d.kind != "choice"}
    return [{**fixed, **{name: bounds[end] for name, bounds in ranges.items()}, "method": method}
            for end in (0, -1) for method in plan.space["method"].values]


def _check_trials(plan: SweepPlan, errors: List[str]) -> None:
    """Builds each trial's ExperimentConfig (a search's corners), so bap.config's own checks run here and not in a
    worker."""
    seen = set()
    for params in plan.trials or _search_corners(plan):
        try:
            plan.trial_config(params)
        except (ValueError, TypeError) as err:
            if str(err) not in seen:
                seen.add(str(err))
                errors.append(f"trial {params}: {err}")


def _check_ray(cfg: SweepConfig, resources: Optional[Dict[str, float]], errors: List[str]) -> None:
    ray = cfg.ray
    for key, value in (("cpus_per_trial", ray.cpus_per_trial), ("gpus_per_trial", ray.gpus_per_trial)):
        if not (value >= 0 and math.isfinite(value)):
            errors.append(f"ray.{key}={value} must be >= 0")
        elif value > 1 and value != int(value):
            errors.append(
                f"ray.{key}={value}: Ray takes fractions only below 1; use {math.ceil(value)} or a fraction < 1"
            )
    if not ray.cpus_per_trial > 0:
        errors.append(f"ray.cpus_per_trial={ray.cpus_per_trial} leaves a trial no CPU to run on; use 1 or more")
    if ray.max_concurrent_trials is not None and ray.max_concurrent_trials < 1:
        errors.append(f"ray.max_concurrent_trials={ray.max_concurrent_trials} must be >= 1, or null for no limit")
    if ray.max_failures < -1:
        errors.append(f"ray.max_failures={ray.max_failures} must be >= 0, or -1 to retry forever")
    if cfg.train.device == "cuda" and ray.gpus_per_trial == 0:
        errors.append("train.device=cuda but ray.gpus_per_trial=0, so trials see no GPU; set ray.gpus_per_trial=1 "
                      "(or a fraction) or train.device=auto")
    if resources is not None:
        _check_fits(cfg, resources, errors)


def _check_fits(cfg: SweepConfig, resources: Dict[str, float], errors: List[str]) -> None:
    ray = cfg.ray
    for key, resource in (("cpus_per_trial", "CPU"), ("gpus_per_trial", "GPU")):
        need, have = getattr(ray, key), float(resources.get(resource, 0.0))
        if need > have:
            errors.append(
                f"ray.{key}={need:g} but the cluster has {have:g} {resource}(s), so no trial could start; "
                f"set ray.{key}<={have:g} or {_ADDRESS_FIX}"
            )


def _check_scheduler(cfg: SweepConfig, errors: List[str]) -> None:
    s = cfg.scheduler
    if s.name not in SCHEDULERS:
        errors.append(f"scheduler.name={s.name!r} is not supported; use scheduler=" + " or scheduler=".join(SCHEDULERS))
    if s.mode not in ("max", "min"):
        errors.append(f"scheduler.mode={s.mode!r} must be max or min")
    if s.name == "pareto":
        if not 1 <= s.grace_period < cfg.train.epochs:
            errors.append(f"scheduler.grace_period={s.grace_period} must be in [1, train.epochs={cfg.train.epochs}) "
                          "epochs: stopping after the last epoch would save only the final pruning")
        if not (math.isfinite(s.margin) and s.margin >= 0):
            errors.append(f"scheduler.margin={s.margin} must be >= 0 accuracy points (percent), e.g. 2.0")
    if s.name != "asha":
        return
    max_t = s.max_t if s.max_t is not None else cfg.train.epochs
    if not 1 <= s.grace_period <= max_t:
        errors.append(f"scheduler.grace_period={s.grace_period} must be in [1, max_t={max_t}] epochs")
    if not s.reduction_factor > 1:
        errors.append(f"scheduler.reduction_factor={s.reduction_factor} must be > 1 (2 halves the trials per rung)")


# An example of each searched range, for the fix.
_RANGE_EXAMPLES = {"budget": "[0.2,1.0]", "sharing_weight": "[1,30]", "lr": "[0.001,0.1]", "switch_lr": "[0.0001,0.01]"}


def _check_range(key: str, bounds, top: Optional[float], how: str, errors: List[str], unset: str = "") -> None:
    numbers = isinstance(bounds, (list, tuple)) and len(bounds) == 2 and \
        all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)
    if not (numbers and 0 < bounds[0] < bounds[1] and (top is None or bounds[1] <= top)):
        within = f"0 < low < high <= {top:g}" if top else "0 < low < high"
        shown = list(bounds) if isinstance(bounds, (list, tuple)) else repr(bounds)
        errors.append(f"search.{key}={shown} must be [low, high] with {within} ({how}), e.g. "
                      f"search.{key}={_RANGE_EXAMPLES[key]}{unset}")


def _one_value(values: list) -> str:
    return "[" + ",".join(map(str, values[0])) + "]" if isinstance(values[0], list) else f"[{values[0]}]"


def _check_search(plan: SweepPlan, errors: List[str]) -> None:
    """A search's settings; a grid's are never read."""
    cfg, s = plan.cfg, plan.cfg.search
    if s.algorithm not in SEARCH_ALGORITHMS:
        errors.append(f"search.algorithm={s.algorithm!r} is unknown; use search=grid or search=optuna")
    if s.algorithm != "optuna":
        return
    if s.num_samples < 1:
        errors.append(f"search.num_samples={s.num_samples} must be >= 1: the number of trials Optuna picks")
    if s.sampler not in SAMPLERS:
        errors.append(f"search.sampler={s.sampler!r} is unknown; use {' or '.join(SAMPLERS)}")
    if s.startup_trials is not None and s.startup_trials < 2:
        errors.append(f"search.startup_trials={s.startup_trials} must be >= 2 (the random trials the sampler starts "
                      "from), or null for the sampler's default")
    elif s.startup_trials is not None and s.startup_trials > s.num_samples >= 1:
        errors.append(f"search.startup_trials={s.startup_trials} is more than search.num_samples={s.num_samples}: "
                      f"the search would never get past its random start; use search.startup_trials<={s.num_samples} "
                      "or more samples")
    if s.cost not in SEARCH_COSTS:
        errors.append(f"search.cost={s.cost!r} is no cost a trial reports; use {' or '.join(SEARCH_COSTS)}")
    _check_range("budget", s.budget, 1.0, "fractions of the backbone, sampled uniformly", errors)
    for key in LOG_UNIFORM:
        if getattr(s, key) is not None:
            fixed = key if key == "sharing_weight" else f"train.{key}"
            _check_range(key, getattr(s, key), None, "sampled log-uniformly", errors, f", or null to keep {fixed}")
    if s.methods is not None:  # else the methods are the `methods` axis, checked with the axes
        unknown = sorted({method for method in s.methods if method not in SHARING_OPTIONS})
        if not s.methods:
            errors.append("search.methods=[] leaves no method to choose; give at least one, e.g. "
                          "search.methods=[union,jaccard], or null for the `methods` axis")
        elif unknown:
            errors.append(f"search.methods has unknown method(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(SHARING_OPTIONS)}")
        elif len(set(s.methods)) != len(s.methods):
            errors.append(f"search.methods={list(s.methods)} repeats a method; list each method once")
    for name, key in (("backbone", "backbones"), ("domains", "domain_sets"), ("seed", "seeds")):
        values = plan.axes[name]
        if len(values) > 1:
            errors.append(f"{key} has {len(values)} values but search=optuna searches one backbone, domain set and "
                          f"seed; keep one ({key}={_one_value(values)}) or use search=grid")
    if cfg.scheduler.name == "asha":
        errors.append("scheduler=asha stops trials before their final acc_mean, which search=optuna's sampler "
                      "learns from; use scheduler=none, or scheduler=pareto (its stopped trials are told to the sampler "
                      "as pruned)")


def validate(plan: SweepPlan, cluster_resources: Optional[Dict[str, float]] = None) -> None:
    """Raise ``SweepConfigError`` (a ``ConfigError``, so a ``ValueError``) listing every problem of the sweep
    ``plan``; return None if sound.

    ``cluster_resources`` is ``ray.cluster_resources()`` (or ``local_resources()``); None skips the check that
    the cluster can place one trial.
    """
    cfg, errors = plan.cfg, []
    if not str(cfg.experiment).strip():
        errors.append("experiment is empty; name the MLflow experiment, e.g. experiment=vd_resnet26")
    if not str(cfg.mlflow.tracking_uri).strip():
        errors.append("mlflow.tracking_uri is empty; unset it for sqlite:///mlflow.db or set MLFLOW_TRACKING_URI")
    if cfg.model_registry is not None and (not str(cfg.model_registry).strip()
                                           or any(c in str(cfg.model_registry) for c in "/:")):
        # MLflow's own rule for registered model names, checked before the sweep rather than at its closing.
        errors.append(f"model_registry={cfg.model_registry!r} is no MLflow model name (not empty, no '/' or ':'); "
                      "e.g. model_registry=vd-front, or leave it unset")
    _check_axes(cfg, errors)
    _check_search(plan, errors)
    domains = _check_domains(cfg, errors)
    check_files(cfg, domains, errors)
    if not errors:  # every trial would repeat an axis error above
        _check_model(plan, errors)
        _check_trials(plan, errors)
    _check_ray(cfg, cluster_resources, errors)
    _check_scheduler(cfg, errors)
    check_storage(cfg, errors)
    if errors:
        raise SweepConfigError(errors)


def check_cluster(cfg: SweepConfig, cluster_resources: Dict[str, float]) -> None:
    """Raise ``SweepConfigError`` when the joined cluster (``ray.cluster_resources()``) cannot place one trial: the
    one check of ``validate`` that waits for a cluster's resources."""
    errors: List[str] = []
    _check_fits(cfg, cluster_resources, errors)
    if errors:
        raise SweepConfigError(errors)
