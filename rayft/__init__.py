"""rayft: fine-tune language models on Ray and search their hyperparameters.

The public surface is small: `train`, `load_config` and `ExperimentConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rayft.config import ConfigError, ExperimentConfig, load_config

if TYPE_CHECKING:
    from rayft.training.launch import TrainResult

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "train"]


def train(config: Any, overrides: list[str] | None = None, address: str | None = None, resume: bool = False) -> TrainResult:
    """Fine-tune as `config` (an ExperimentConfig, a dict, or a YAML path) says; see rayft.training.launch."""
    from rayft.training.launch import train as _train

    return _train(config, overrides=overrides, address=address, resume=resume)
