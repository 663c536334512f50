"""rayft: fine-tune language models on Ray and search their hyperparameters.

The public surface is small: `train`, `sweep`, `load_config` and `ExperimentConfig`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rayft.config import ConfigError, ExperimentConfig, load_config
from rayft.training.loopback import keep_embedded_ray_on_loopback

if TYPE_CHECKING:
    from rayft.training.launch import KFoldResult, TrainResult
    from rayft.tune.sweep import SweepResult

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "sweep", "train"]


def train(
    config: Any, overrides: list[str] | None = None, address: str | None = None, resume: bool = False
) -> TrainResult | KFoldResult:
    """Fine-tune as `config` (an ExperimentConfig, a dict, or a YAML path) says; see rayft.training.launch."""
    if address is None and not os.environ.get("RAY_ADDRESS"):
        keep_embedded_ray_on_loopback()
    from rayft.training.launch import train as _train

    return _train(config, overrides=overrides, address=address, resume=resume)


def sweep(config: Any, overrides: list[str] | None = None, address: str | None = None, resume: bool = False) -> SweepResult:
    """Search the experiment's `tune.space` with Ray Tune; see rayft.tune.sweep."""
    if address is None and not os.environ.get("RAY_ADDRESS"):
        keep_embedded_ray_on_loopback()
    from rayft.tune.sweep import sweep as _sweep

    return _sweep(config, overrides=overrides, address=address, resume=resume)
