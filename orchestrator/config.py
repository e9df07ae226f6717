"""The typed schema of a sweep and the expansion of its axes into trials.

``SweepConfig`` = the fixed values every trial shares (the ``bap.config`` pieces) + the sweep axes + Ray and
MLflow settings. Hydra composes ``sweeps/*.yaml`` into it (``config_store.register_configs``); a notebook can
build it directly. No hydra or ray import here, so the expansion is testable on its own.

An axis left ``None`` sweeps the single fixed value (``budgets=None`` -> ``[budget.beta]``), so a sweep
without axes is one trial of the fixed config. Per trial the axis value replaces the fixed one.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

from bap.config import BudgetConfig, DataConfig, ExperimentConfig, ModelConfig, SharingConfig, TrainConfig
from bap.metrics import VAL_ACC_MEAN

# MLflow 3's own default store: one file, no server, and `mlflow ui --backend-store-uri sqlite:///mlflow.db`
# run in the launch directory opens it (plain `mlflow ui` too, unless a ./mlruns directory exists there).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SCHEDULERS = ("none", "asha")
# model.weights=embedded: pretrain each backbone on the embedded source domain (orchestrator.pretrained).
EMBEDDED_WEIGHTS = "embedded"
# Trial parameters, in the order plan_sweep() nests them (the last varies fastest).
AXES = ("backbone", "domains", "sharing", "budget", "seed")


@dataclass
class SchedulerConfig:
    # none: every trial runs all epochs; asha: early-stop the worst trials on `metric` (needs per-epoch reports).
    name: str = "none"
    metric: str = VAL_ACC_MEAN
    mode: str = "max"
    # In epochs (Tune's training_iteration): ASHA never stops a trial before grace_period.
    grace_period: int = 1
    reduction_factor: float = 2.0
    # None: train.epochs.
    max_t: Optional[int] = None


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

    # Fixed values shared by every trial. The sharing-loss *name* is the `sharing` axis (None: bap's default,
    # union); only its weight is fixed here (a float or "learnable").
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
    sharing: Optional[List[str]] = None
    seeds: Optional[List[int]] = None

    ray: RayConfig = field(default_factory=RayConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    # When set, the front's models are registered under this name, tagged budget, sharing, backbone and domain_set.
    model_registry: Optional[str] = None


def _axis(values: Optional[list], fixed: Any) -> list:
    return [fixed] if values is None else list(values)


def _sweep_axes(cfg: SweepConfig) -> Dict[str, list]:
    """Trial parameter -> the values it takes: Ray's ``param_space`` wraps each list in ``tune.grid_search``."""
    return {
        "backbone": _axis(cfg.backbones, cfg.model.backbone),
        "domains": [list(s) for s in cfg.domain_sets] if cfg.domain_sets else [cfg.data.domains],
        "sharing": _axis(cfg.sharing, SharingConfig().loss),
        "budget": _axis(cfg.budgets, cfg.budget.beta),
        "seed": _axis(cfg.seeds, cfg.train.seed),
    }


@dataclass(frozen=True)
class SweepPlan:
    """What a resolved sweep config implies, computed once (``plan_sweep``): its axes and its trials. Validation,
    the pretrained weights, Tune's param space, the MLflow params and ``orchestrator.train`` all read it; a search
    algorithm would plug in here, as another way of choosing ``trials``."""

    cfg: SweepConfig
    axes: Dict[str, list]
    # Every trial's varying values: the product of the axes, nested in ``AXES`` order (deterministic).
    trials: List[Dict[str, Any]]

    @property
    def backbones(self) -> List[str]:
        return self.axes["backbone"]

    def trial_config(self, params: Dict[str, Any]) -> ExperimentConfig:
        return trial_config(self.cfg, params)


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    axes = _sweep_axes(cfg)
    trials = [dict(zip(AXES, values)) for values in itertools.product(*(axes[name] for name in AXES))]
    return SweepPlan(cfg, axes, trials)


def trial_config(cfg: SweepConfig, params: Dict[str, Any]) -> ExperimentConfig:
    """One trial's full config: the fixed values with ``params`` applied. ``replace`` re-runs the validation."""
    weights = weights_path(cfg.model.weights, params["backbone"])
    domains = None if params["domains"] is None else list(params["domains"])
    return ExperimentConfig(
        model=dataclasses.replace(cfg.model, backbone=params["backbone"], weights=weights),
        budget=dataclasses.replace(cfg.budget, beta=params["budget"]),
        sharing=SharingConfig(loss=params["sharing"], weight=cfg.sharing_weight),
        data=dataclasses.replace(cfg.data, domains=domains),
        train=dataclasses.replace(cfg.train, seed=params["seed"]),
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
    """Readable and unique within a sweep: ``resnet26_all_jaccard_b0.5_s0``."""
    return (
        f"{params['backbone']}_{domain_set_name(params['domains'])}_{params['sharing']}"
        f"_b{params['budget']:g}_s{params['seed']}"
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
