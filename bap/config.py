"""Typed configuration of one BAP training run.

Plain dataclasses: the orchestrator mirrors them as Hydra structured configs, a notebook builds them directly.
Every ``__post_init__`` rejects bad values with a message that names the field and the fix, so a bad sweep fails
before any cluster job starts. Defaults marked (ours) are choices METHOD.md fixes where the papers are silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from bap.models.registry import list_models

BUDGET_UNITS = ("params", "switches", "macs")
# The papers' three names (our pairwise / concave forms), a consensus term, and the D-way products of METHOD 3.
SHARING_LOSSES = ("int", "union", "jaccard", "consensus", "int_dway", "union_dway", "jaccard_dway")
# Switches never trained, chosen by a fixed ranking (bap.baselines): what a method result is measured against.
# One-shot: cut at beta from the first step. Annealed (gradual pruning, Zhu and Gupta 2017): the same ranking cut at
# the learned methods' annealed target every step, then fixed, so a learned method and its baseline share a schedule.
ONE_SHOT_BASELINES = ("random", "random_shared", "magnitude_shared")
ANNEALED_BASELINES = ("random_shared_annealed", "magnitude_annealed")
BASELINES = (*ONE_SHOT_BASELINES, *ANNEALED_BASELINES)
# Values of `sharing.loss` (the sweep's `sharing` axis): `none` is BA² trained jointly.
SHARING_OPTIONS = ("none", *SHARING_LOSSES, *BASELINES)
SCHEDULES = ("accumulate", "round_robin")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("embedded", "decathlon", "imagenet_sketch")
# The order learned latents start in (bap.budget.order_latents): all equal (Piggyback's init), or every domain's by
# its input channels' frozen-weight magnitude, so the anneal first drops what magnitude pruning would drop.
INIT_ORDERS = ("uniform", "magnitude")


def _check_choice(field_name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{field_name}={value!r} is not supported; use one of: {', '.join(map(str, allowed))}")


def _check_positive(field_name: str, value: float, fix: str = "") -> None:
    if not value > 0:
        raise ValueError(f"{field_name}={value} must be > 0{'; ' + fix if fix else ''}")


@dataclass
class ModelConfig:
    backbone: str = "resnet26"
    # Width factor on every stage's channels; 0.25 keeps CPU runs fast with the same code path as width 1.
    width: float = 1.0
    # Local state-dict file of a pretrained single-domain backbone (never downloaded).
    weights: Optional[str] = None
    # Convs left without switches. The stem only sees 3 RGB channels, so switching it saves nothing (METHOD 1).
    unswitched: List[str] = field(default_factory=lambda: ["conv1"])
    # The domain `weights` was pretrained on (Decathlon: imagenet12): where it is trained, it keeps the file's
    # classifier as its head instead of a new one. It stays switched like every domain: exempting it would keep every channel in the union.
    source_domain: Optional[str] = None

    def __post_init__(self) -> None:
        _check_choice("model.backbone", self.backbone, tuple(list_models()))
        _check_positive("model.width", self.width, "use 1.0 for the paper's widths or e.g. 0.25 on CPU")


@dataclass
class BudgetConfig:
    # beta in (0, 1]: the fraction of the backbone one domain may use, in `unit`.
    beta: float = 1.0
    unit: str = "params"
    # Switch binarisation threshold and latent initial value (ours, after Piggyback): all switches start on.
    threshold: float = 5e-3
    init: float = 1e-2
    # The usage each domain may have anneals from 1 to beta between these fractions of training (ours): every
    # step keeps each domain's top latents within it, so B_d ends at beta, not below (bap.budget).
    anneal_start: float = 0.1
    anneal_end: float = 0.6
    # Share of a domain's budget the final projection may turn off before the trial is flagged projection_heavy.
    heavy_projection: float = 0.05
    # Learned latents start at init + order_spread * rank (rank in [0, 1] by init_order; uniform: all at init).
    # Adam moves a latent about train.switch_lr a step, so the spread sets how much gradient it takes to reorder.
    init_order: str = "uniform"
    order_spread: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"budget.beta={self.beta} is outside (0, 1]; use 1.0 for the unpruned baseline")
        _check_choice("budget.unit", self.unit, BUDGET_UNITS)
        if not self.init > self.threshold:
            raise ValueError(
                f"budget.init={self.init} must exceed budget.threshold={self.threshold} so every switch starts on"
            )
        if not 0.0 <= self.anneal_start < self.anneal_end <= 1.0:
            raise ValueError(
                f"budget.anneal_start={self.anneal_start}, budget.anneal_end={self.anneal_end} must satisfy "
                "0 <= anneal_start < anneal_end <= 1 (fractions of training); e.g. 0.1 and 0.6"
            )
        if not 0.0 <= self.heavy_projection <= 1.0:
            raise ValueError(f"budget.heavy_projection={self.heavy_projection} must be a share in [0, 1], e.g. 0.05")
        _check_choice("budget.init_order", self.init_order, INIT_ORDERS)
        if not self.order_spread >= 0:
            raise ValueError(f"budget.order_spread={self.order_spread} must be >= 0, e.g. 0.01")


@dataclass
class SharingConfig:
    # BAP's parameter-sharing loss; `none` is BA² trained jointly; a baseline fixes random or magnitude switches.
    # union at weight 10 (ours, provisional until the method study): on the embedded data at beta 0.5 (3 seeds) it
    # kept none's accuracy (58.7 vs 59.3) with params_ratio 0.64 vs 0.91; jaccard/consensus/int shrank the union
    # further but lost 4-13 points.
    loss: str = "union"
    # A float, or "learnable" (ours): weight = max_weight * sigmoid(rho), rho raised by dual ascent while the
    # sharing loss is above `target` (in the loss's own units) and lowered while below: weight in (0, max_weight).
    weight: Any = 10.0
    # layer: each layer's loss with its costs scaled to sum 1, averaged over layers; cost: one loss in the budget's
    # unit (late layers dominate).
    normalize: str = "layer"
    # Concavity of the `union` cost f(k) = (1 - (1-q)^k) / (1 - (1-q)^D) in the number of users k.
    q: float = 0.5
    target: float = 0.2
    max_weight: float = 30.0
    dual_lr: float = 0.5

    def __post_init__(self) -> None:
        _check_choice("sharing.loss", self.loss, SHARING_OPTIONS)
        _check_choice("sharing.normalize", self.normalize, ("layer", "cost"))
        if not 0.0 < self.q < 1.0:
            raise ValueError(f"sharing.q={self.q} must be in (0, 1); 0.5 halves the extra cost of each further user")
        if not 0.0 <= self.target <= 1.0:
            raise ValueError(f"sharing.target={self.target} must be in [0, 1] (the sharing losses' range)")
        _check_positive("sharing.max_weight", self.max_weight)
        if self.dual_lr < 0:
            raise ValueError(f"sharing.dual_lr={self.dual_lr} must be >= 0")
        if self.weight == "learnable":
            return
        try:
            self.weight = float(self.weight)
        except (TypeError, ValueError):
            raise ValueError(f"sharing.weight={self.weight!r} must be a number >= 0 or 'learnable'") from None
        if self.weight < 0:
            raise ValueError(f"sharing.weight={self.weight} must be >= 0 or 'learnable'")

    @property
    def learnable(self) -> bool:
        return self.weight == "learnable"

    @property
    def has_loss(self) -> bool:
        return self.loss in SHARING_LOSSES

    @property
    def baseline(self) -> bool:
        """Switches never trained (one-shot or annealed)."""
        return self.loss in BASELINES

    @property
    def one_shot(self) -> bool:
        """Switches fixed at beta from the first step."""
        return self.loss in ONE_SHOT_BASELINES


@dataclass
class DataConfig:
    name: str = "embedded"
    # Root of the data set on disk (decathlon, imagenet_sketch); unused by `embedded`.
    root: Optional[str] = None
    # Domains to train on; None means every target domain of the data set.
    domains: Optional[List[str]] = None
    # Embedded data only: image side, images per class and split, generator seed.
    image_size: int = 32
    train_per_class: int = 60
    val_per_class: int = 50
    # Embedded source domain (`shapes`) used to pretrain the backbone: more images than the targets get.
    source_train_per_class: int = 300
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        _check_choice("data.name", self.name, DATASETS)
        if self.name != "embedded" and not self.root:
            raise ValueError(f"data.root is required for data.name={self.name!r}; set data.root=/path/to/{self.name}")
        if self.domains is not None and len(self.domains) == 0:
            raise ValueError("data.domains=[] names no domain; leave it unset (null) to use every domain")
        if self.domains is not None and len(set(self.domains)) != len(self.domains):
            raise ValueError(f"data.domains={list(self.domains)} repeats a domain; list each domain once")
        _check_positive("data.image_size", self.image_size)
        _check_positive("data.train_per_class", self.train_per_class)
        _check_positive("data.val_per_class", self.val_per_class)
        _check_positive("data.source_train_per_class", self.source_train_per_class)
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers} must be >= 0")


@dataclass
class TrainConfig:
    epochs: int = 10
    # An epoch is a fixed number of optimizer steps, so small domains are revisited (METHOD 3).
    steps_per_epoch: int = 50
    batch_size: int = 32
    eval_batch_size: int = 256
    # Latent switches use Adam (Piggyback); BN and heads use `lr`.
    switch_lr: float = 1e-3
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    # accumulate: one batch of every domain per step; round_robin: one domain per step.
    schedule: str = "accumulate"
    device: str = "auto"
    # Mixed precision, used only on CUDA.
    amp: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"train.{name}={value!r} must be a positive integer")
        _check_positive("train.switch_lr", self.switch_lr)
        _check_positive("train.lr", self.lr)
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        _check_choice("train.device", self.device, DEVICES)


@dataclass
class ExperimentConfig:
    """Everything one trial needs: model, budget, sharing, data and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
