"""bap: budget-aware multi-domain networks (BA² switches + BAP parameter sharing and physical pruning).

Plain PyTorch; never imports Ray, MLflow or Hydra, so it works the same from a notebook, a script or a Ray worker.
"""

from bap import metrics
from bap.config import BudgetConfig, DataConfig, ExperimentConfig, ModelConfig, SharingConfig, TrainConfig
from bap.counting import Counts, count, reference_counts
from bap.io import ModelFileError, load, save
from bap.models import build_model, list_models
from bap.pretrain import PretrainConfig, pretrain
from bap.prune import materialize
from bap.ladder import train_ladder
from bap.train import TrainResult, train

__all__ = [
    "BudgetConfig", "Counts", "DataConfig", "ExperimentConfig", "ModelConfig", "PretrainConfig", "SharingConfig",
    "ModelFileError", "TrainConfig", "TrainResult", "build_model", "count", "list_models", "load", "materialize", "metrics",
    "pretrain", "reference_counts", "save", "train", "train_ladder",
]
