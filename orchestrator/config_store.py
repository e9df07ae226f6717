"""Hydra structured configs: the only ``ConfigStore`` calls, and composition into a ``SweepConfig``.

Each YAML file in ``sweeps/<group>/`` starts with ``defaults: - base_<group>`` and holds values only; the
``base_<group>`` schema registered here is the ``bap.config`` / ``orchestrator.config`` dataclass, so a typo
or a wrong type fails at composition. Group options land in the dataclass field named by their
``# @package`` line (``backbone/`` -> ``model``, ``trainer/`` -> ``train``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from bap.config import DataConfig, ModelConfig, TrainConfig
from orchestrator.config import ReportConfig, SchedulerConfig, SearchConfig, SweepConfig

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
CONFIG_NAME = "config"  # sweeps/config.yaml: the sweep's and orchestrator.train's
REPORT_CONFIG_NAME = "report"  # orchestrator.report's: the ReportConfig schema alone, no YAML file
# Hydra's config-loading semantics of 1.3 (no working-directory change, strict defaults lists).
VERSION_BASE = "1.3"

# group -> (schema, the SweepConfig field it fills)
GROUPS = {
    "backbone": (ModelConfig, "model"),
    "data": (DataConfig, "data"),
    "trainer": (TrainConfig, "train"),
    "scheduler": (SchedulerConfig, "scheduler"),
    "search": (SearchConfig, "search"),
}


def register_configs() -> None:
    """Register ``base_config`` and every ``base_<group>``; idempotent (ConfigStore overwrites by name)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=SweepConfig)
    cs.store(name=REPORT_CONFIG_NAME, node=ReportConfig)
    for group, (schema, package) in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=schema, package=package)


def to_config(cfg: DictConfig, schema: type = SweepConfig):
    """The composed config as real dataclasses (resolving interpolations and running every ``__post_init__``).

    Done once at the top, so no code below ever sees a ``DictConfig``.
    """
    config = OmegaConf.to_object(cfg)
    if not isinstance(config, schema):
        raise TypeError(
            f"composed config is a {type(config).__name__}, not a {schema.__name__}; "
            f"{SWEEPS_DIR / (CONFIG_NAME + '.yaml')} must start with `defaults: - base_config`"
        )
    return config


def compose_sweep_config(overrides: Sequence[str] = ()) -> SweepConfig:
    """``sweeps/config.yaml`` + Hydra ``overrides`` as a ``SweepConfig``, without ``@hydra.main``.

    For tests and notebooks; apply ``orchestrator.cli.rewrite_sweep_args`` first to accept ``budgets=0.25,0.5``.
    """
    register_configs()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base=VERSION_BASE, job_name="compose"):
        return to_config(compose(config_name=CONFIG_NAME, overrides=list(overrides)))
