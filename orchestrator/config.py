"""The typed schema of a sweep and the expansion of its axes into trials.

``SweepConfig`` = the fixed values every trial shares (the ``bap.config`` pieces) + the sweep axes + Ray and
MLflow settings. Hydra composes ``sweeps/*.yaml`` into it (``config_store.register_configs``); a notebook can
build it directly. No hydra or ray import here, so the expansion is testable on its own.

An axis left ``None`` sweeps the single fixed value (``budgets=None`` -> ``[budget.beta]``), so a sweep
without axes is one trial of the fixed config. Per trial the axis value replaces the fixed one. With
``search.algorithm=optuna`` a sampler picks the budget and the method (and, where ranges are given, the sharing
weight and learning rates) of each trial instead; the plan then holds that space, not a trial list.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import warnings
from dataclasses import InitVar, dataclass, field
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

from bap import metrics as M
from bap.config import BudgetConfig, DataConfig, ExperimentConfig, ModelConfig, SharingConfig, TrainConfig

# MLflow 3's own default store: one file, no server, and `mlflow ui --backend-store-uri sqlite:///mlflow.db`
# run in the launch directory opens it (plain `mlflow ui` too, unless a ./mlruns directory exists there).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SCHEDULERS = ("none", "asha", "pareto")
# model.weights=embedded: pretrain each backbone on the embedded source domain (orchestrator.pretrained).
EMBEDDED_WEIGHTS = "embedded"
# Trial parameters, in the order plan_sweep() nests them (the last varies fastest).
AXES = ("backbone", "domains", "method", "budget", "seed")
SEARCH_ALGORITHMS = ("grid", "optuna")
SAMPLERS = ("tpe", "nsga2")
# The search's second objective, minimised while acc_mean is maximised: the pruned model's final metrics.
SEARCH_COSTS = (M.PARAMS_RATIO, M.MACS_RATIO)
# Searched with a log-uniform range when one is given; each is both a SearchConfig field and a trial parameter.
LOG_UNIFORM = ("sharing_weight", "lr", "switch_lr")


@dataclass
class SchedulerConfig:
    # none: every trial runs all epochs; asha: early-stop the worst trials on `metric` (needs per-epoch reports);
    # pareto: stop a trial its group's finished trials dominate by `margin` (orchestrator.stopping).
    name: str = "none"
    metric: str = M.VAL_ACC_MEAN
    mode: str = "max"
    # In epochs: neither ASHA nor pareto stops a trial before grace_period.
    grace_period: int = 1
    reduction_factor: float = 2.0
    # None: train.epochs.
    max_t: Optional[int] = None
    # pareto: accuracy points (percent) a finished trial must have been ahead at the same epoch, at no higher
    # params_ratio, to stop a trial.
    margin: float = 2.0


@dataclass
class SearchConfig:
    # grid: every combination of the sweep axes; optuna: `num_samples` trials an Optuna sampler picks, maximising
    # acc_mean and minimising `cost`. The keys below are optuna's only.
    algorithm: str = "grid"
    num_samples: int = 16
    # tpe: multi-objective TPE (random for its first 10 trials); nsga2: NSGA-II (random for its first 50).
    sampler: str = "tpe"
    # The random trials a sampler starts with (TPE's n_startup_trials, NSGA-II's population size); None: its
    # default above. A search of few trials needs fewer, or it is a random search.
    startup_trials: Optional[int] = None
    seed: int = 0
    cost: str = M.PARAMS_RATIO
    # [low, high] of each trial's budget beta, sampled uniformly; replaces the `budgets` axis.
    budget: List[float] = field(default_factory=lambda: [0.2, 1.0])
    # The methods to choose from; None: the sweep's `methods` axis.
    methods: Optional[List[str]] = None
    # [low, high], sampled log-uniformly; None keeps the fixed value (sharing_weight, train.lr, train.switch_lr).
    sharing_weight: Optional[List[float]] = None
    lr: Optional[List[float]] = None
    switch_lr: Optional[List[float]] = None
    sharing: InitVar[Optional[List[str]]] = None  # the old name of `methods`, read with a DeprecationWarning

    def __post_init__(self, sharing: Optional[List[str]]) -> None:
        self.methods = _renamed_axis("search.sharing", sharing, "search.methods", self.methods)


@dataclass
class RayConfig:
    # None starts a local Ray; "auto" or "ray://host:10001" joins a cluster. Defaults to $RAY_ADDRESS.
    address: Optional[str] = field(default_factory=lambda: os.environ.get("RAY_ADDRESS") or None)
    # Fractions are allowed below 1 (e.g. 0.5 packs two trials on one GPU); above 1 Ray needs whole numbers.
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    # None: as many as the resources allow.
    max_concurrent_trials: Optional[int] = None
    # Retries of a failed trial (from its last checkpoint); -1 retries forever.
    max_failures: int = 0
    # Where Tune writes trial dirs and checkpoints; a URI (s3://, gs://) shares it with a cluster.
    storage_path: str = "runs/ray"


@dataclass
class MlflowConfig:
    # $MLFLOW_TRACKING_URI if set, else a SQLite file in the launch directory (see DEFAULT_TRACKING_URI).
    tracking_uri: str = field(default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)
    # How long the driver waits for an unreachable MLflow at the end of a sweep before it leaves the remaining
    # writes, the front and the parent run's status in the spool for `orchestrator.report sync=true`.
    end_wait_s: float = 60.0
    # Each trial's system metrics (MLflow's own: CPU, memory, disk, network, GPU where present) sampled this often;
    # 0 turns them off.
    system_metrics_every_s: float = 10.0

    def __post_init__(self) -> None:
        if self.system_metrics_every_s < 0:
            raise ValueError(f"mlflow.system_metrics_every_s={self.system_metrics_every_s} must be >= 0 (0 turns "
                             "system metrics off)")


@dataclass
class ReportConfig:
    """``python -m orchestrator.report``: the front of every sweep of one experiment, rebuilt from MLflow."""

    experiment: str = ""
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    # First replay the writes spooled while MLflow was down: from spool_dir, or from every default spool.
    sync: bool = False
    spool_dir: Optional[str] = None
    # Let trials whose final budget projection was heavy onto the front (left off by default).
    include_heavy: bool = False
    # When set, the models of the front this report publishes are registered under this name (as a sweep does).
    model_registry: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ValueError("experiment is required: python -m orchestrator.report experiment=NAME "
                             "[mlflow.tracking_uri=URI] [sync=true [spool_dir=DIR]] [include_heavy=true]")


@dataclass
class SweepConfig:
    # MLflow experiment name and Tune run name: one name, so the two stores line up.
    experiment: str = "bap"
    # false: a new sweep; true: the latest unfinished sweep of the experiment; a path: the sweep in that folder.
    resume: Optional[str] = None

    # Fixed values shared by every trial. The method (`sharing.loss` of each trial) is the `methods` axis (None:
    # bap's default, union); only the sharing weight is fixed here (a float or "learnable").
    model: ModelConfig = field(default_factory=ModelConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    sharing_weight: Any = SharingConfig().weight
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # Sweep axes: the grid is their product. None sweeps the fixed value only.
    budgets: Optional[List[float]] = None
    # Each entry is one domain set; None (or []) trains on data.domains (None there = every domain).
    domain_sets: Optional[List[List[str]]] = None
    backbones: Optional[List[str]] = None
    # What each trial trains: a sharing loss, none (BA² alone) or a baseline (bap.config.SHARING_OPTIONS).
    methods: Optional[List[str]] = None
    seeds: Optional[List[int]] = None

    ray: RayConfig = field(default_factory=RayConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    # When set, the front's models are registered under this name, tagged budget, sharing, backbone and domain_set.
    model_registry: Optional[str] = None
    sharing: InitVar[Optional[List[str]]] = None  # the old name of `methods`, read with a DeprecationWarning

    def __post_init__(self, sharing: Optional[List[str]]) -> None:
        self.methods = _renamed_axis("sharing", sharing, "methods", self.methods)


def _renamed_axis(old: str, old_value: Optional[list], new: str, value: Optional[list]) -> Optional[list]:
    """``value``, or ``old_value`` given under the key's old name (with a DeprecationWarning)."""
    if old_value is None:
        return value
    if value is not None:
        raise ValueError(f"{old}={list(old_value)} and {new}={list(value)} are one setting; keep {new}=")
    warnings.warn(f"{old} is deprecated; write {new}={list(old_value)}", DeprecationWarning, stacklevel=4)
    return old_value


def _axis(values: Optional[list], fixed: Any) -> list:
    return [fixed] if values is None else list(values)


def _sweep_axes(cfg: SweepConfig) -> Dict[str, list]:
    """Trial parameter -> the values it takes: Ray's ``param_space`` wraps each list in ``tune.grid_search``."""
    return {
        "backbone": _axis(cfg.backbones, cfg.model.backbone),
        "domains": [list(s) for s in cfg.domain_sets] if cfg.domain_sets else [cfg.data.domains],
        "method": _axis(cfg.methods, SharingConfig().loss),
        "budget": _axis(cfg.budgets, cfg.budget.beta),
        "seed": _axis(cfg.seeds, cfg.train.seed),
    }


@dataclass(frozen=True)
class Searched:
    """How a search draws one trial parameter: ``kind`` uniform or loguniform over ``values`` = (low, high), or
    choice among ``values``."""

    kind: str
    values: tuple


@dataclass(frozen=True)
class SweepPlan:
    """What a resolved sweep config implies, computed once (``plan_sweep``): its axes and its trials, or its search
    space. Validation, the pretrained weights, Tune's param space, the MLflow params and ``orchestrator.train``
    all read it."""

    cfg: SweepConfig
    # grid: every axis; a search: the axes it keeps fixed (one value each, checked by validate).
    axes: Dict[str, list]
    # grid: every trial's varying values, the product of the axes nested in ``AXES`` order (deterministic);
    # a search: none, its sampler picks them as trials finish.
    trials: List[Dict[str, Any]]
    # A search: trial parameter -> how it is drawn; a grid: empty.
    space: Dict[str, Searched] = field(default_factory=dict)

    @property
    def backbones(self) -> List[str]:
        return self.axes["backbone"]

    def trial_config(self, params: Dict[str, Any]) -> ExperimentConfig:
        return trial_config(self.cfg, params)


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    axes = _sweep_axes(cfg)
    if cfg.search.algorithm == "optuna":
        space = _search_space(cfg.search, axes["method"])
        return SweepPlan(cfg, {k: v for k, v in axes.items() if k not in space}, [], space)
    trials = [dict(zip(AXES, values)) for values in itertools.product(*(axes[name] for name in AXES))]
    return SweepPlan(cfg, axes, trials)


def _search_space(search: SearchConfig, methods: List[str]) -> Dict[str, Searched]:
    space = {"budget": Searched("uniform", tuple(search.budget)),
             "method": Searched("choice", tuple(search.methods or methods))}
    for name in LOG_UNIFORM:
        if getattr(search, name) is not None:
            space[name] = Searched("loguniform", tuple(getattr(search, name)))
    return space


def objectives(search: SearchConfig) -> Dict[str, str]:
    """A search's objectives, metric -> mode: the pruned model's accuracy up, its cost down."""
    return {M.ACC_MEAN: "max", search.cost: "min"}


def trial_config(cfg: SweepConfig, params: Dict[str, Any]) -> ExperimentConfig:
    """One trial's full config: the fixed values with ``params`` applied (a search's sharing weight and learning
    rates where it drew them). ``replace`` re-runs the validation."""
    weights = weights_path(cfg.model.weights, params["backbone"])
    domains = None if params["domains"] is None else list(params["domains"])
    return ExperimentConfig(
        model=dataclasses.replace(cfg.model, backbone=params["backbone"], weights=weights),
        budget=dataclasses.replace(cfg.budget, beta=params["budget"]),
        sharing=SharingConfig(loss=params["method"], weight=params.get("sharing_weight", cfg.sharing_weight)),
        data=dataclasses.replace(cfg.data, domains=domains),
        train=dataclasses.replace(cfg.train, seed=params["seed"], lr=params.get("lr", cfg.train.lr),
                                  switch_lr=params.get("switch_lr", cfg.train.switch_lr)),
    )


def weights_path(weights: Optional[str], backbone: str) -> Optional[str]:
    """What ``model.weights`` means for ``backbone``: None (random init), ``EMBEDDED_WEIGHTS``, or a file, with
    ``{backbone}`` filled in (one template serves a backbone sweep: ``weights/{backbone}.pt``)."""
    if weights is None or weights == EMBEDDED_WEIGHTS:
        return weights
    return weights.replace("{backbone}", backbone)


def domain_set_name(domains: Optional[List[str]]) -> str:
    """A domain set as a short label for groups, tags and plots: ``all`` or ``dtd+svhn`` (in the given order)."""
    return "all" if domains is None else "+".join(domains)


def trial_name(params: Dict[str, Any]) -> str:
    """Readable: ``resnet26_all_jaccard_b0.5_s0``; the budget to 3 significant digits (a search's 0.43712...
    reads b0.437). Unique within a grid of such budgets; Tune's trial id keeps every trial's folder apart."""
    return (
        f"{params['backbone']}_{domain_set_name(params['domains'])}_{params['method']}"
        f"_b{params['budget']:.3g}_s{params['seed']}"
    )


def resolve_paths(cfg: SweepConfig, base_dir: Optional[str] = None) -> SweepConfig:
    """A copy with relative local paths made absolute against ``base_dir`` (default: the current directory).

    Ray runs each trial in its own working directory, so a relative ``data.root`` or ``sqlite:///mlflow.db``
    would point somewhere else there. Call once in the driver, before the Tuner starts.
    """
    base = os.path.abspath(base_dir or os.getcwd())
    absolute = lambda p: p if p is None or "://" in p else os.path.join(base, os.path.expanduser(p))  # noqa: E731
    uri = cfg.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + absolute(uri[len("sqlite:///") :])
    elif not urlparse(uri).scheme:
        uri = absolute(uri)  # a bare path is a file store
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(
            cfg.model, weights=cfg.model.weights if cfg.model.weights == EMBEDDED_WEIGHTS else absolute(cfg.model.weights)
        ),
        data=dataclasses.replace(cfg.data, root=absolute(cfg.data.root)),
        ray=dataclasses.replace(cfg.ray, storage_path=absolute(cfg.ray.storage_path)),
        mlflow=dataclasses.replace(cfg.mlflow, tracking_uri=uri),
    )
