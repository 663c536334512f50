"""The DeepSpeed config, written from the experiment so that the two never disagree.

rayft owns every setting the experiment already states (batch sizes, accumulation, clipping,
precision, ZeRO stage and offload); a user JSON (`train.deepspeed.config`) may add anything
else and may repeat an owned key with the same value, but a different value is an error that
names both the JSON key and the experiment key. The optimizer and the schedule are not in the
config at all: rayft passes its own AdamW (same weight-decay groups as the torch engine) and
transformers' scheduler to `deepspeed.initialize`, so both engines follow identical schedules.

Pure dict work, no DeepSpeed import: the driver builds (and so checks) the config before any
worker starts, and unit tests run without Ray.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from rayft.config import ConfigError, ExperimentConfig

DEEPSPEED_CONFIG_FILE = "deepspeed_config.json"

_NOT_ALLOWED = {
    "optimizer": "rayft passes its AdamW built from train.lr and train.weight_decay",
    "scheduler": "rayft passes transformers' train.scheduler with train.warmup_ratio/warmup_steps",
}

_LOSS_SCALING = {"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
"""Dynamic fp16 loss scaling (loss_scale 0 means dynamic): DeepSpeed's documented defaults, spelled out."""


def owned_settings(config: ExperimentConfig) -> dict[str, tuple[Any, str]]:
    """Dotted DeepSpeed key -> (value, the experiment key it comes from)."""
    train, zero = config.train, config.train.deepspeed
    assert zero is not None, "owned_settings needs train.backend=deepspeed"
    return {
        "train_micro_batch_size_per_gpu": (train.batch_size, "train.batch_size"),
        "gradient_accumulation_steps": (train.grad_accum, "train.grad_accum"),
        "train_batch_size": (
            train.batch_size * train.grad_accum * config.scaling.num_workers,
            "train.batch_size x train.grad_accum x scaling.num_workers",
        ),
        # rayft's loop marks each optimizer step itself (the last step of an epoch may hold fewer
        # micro-batches) and weighs every token of the step equally, so DeepSpeed must neither count
        # micro-batches nor divide the loss by the accumulation steps.
        "managed_gradient_accumulation": (False, "rayft's loop (it decides where each optimizer step ends)"),
        "gradient_clipping": (train.max_grad_norm or 0.0, "train.max_grad_norm"),
        "zero_optimization.stage": (zero.stage, "train.deepspeed.stage"),
        "zero_optimization.offload_optimizer.device": ("cpu" if zero.offload_optimizer else "none", "train.deepspeed.offload_optimizer"),
        "zero_optimization.offload_param.device": ("cpu" if zero.offload_params else "none", "train.deepspeed.offload_params"),
        "bf16.enabled": (train.precision == "bf16", "train.precision"),
        "fp16.enabled": (train.precision == "fp16", "train.precision"),
    }


def default_settings(config: ExperimentConfig, hidden_size: int | None = None) -> dict[str, Any]:
    """rayft's choices for keys the experiment does not state; a user JSON may change them.

    With the model's hidden size, the communication buckets are sized to the model as the
    transformers Trainer sizes its "auto" values. DeepSpeed's own defaults (5e8 elements) suit
    billion-parameter models; on a small one, ZeRO-3 with them peaked 11% higher per worker
    (benchmarks/RESULTS.md).
    """
    defaults: dict[str, Any] = {
        "steps_per_print": 2**31 - 1,  # rayft logs loss and lr itself
        "wall_clock_breakdown": False,
    }
    if config.train.precision == "fp16":
        defaults["fp16"] = dict(_LOSS_SCALING)
    zero = config.train.deepspeed
    assert zero is not None, "default_settings needs train.backend=deepspeed"
    zero_defaults: dict[str, Any] = defaults.setdefault("zero_optimization", {})
    if hidden_size is not None and zero.stage >= 1:
        zero_defaults["reduce_bucket_size"] = hidden_size * hidden_size
        if zero.stage == 3:
            zero_defaults["stage3_prefetch_bucket_size"] = int(0.9 * hidden_size * hidden_size)
            zero_defaults["stage3_param_persistence_threshold"] = 10 * hidden_size
    if zero.offload_optimizer:
        zero_defaults["offload_optimizer"] = {"pin_memory": config.scaling.use_gpu}
        # The offloaded step runs rayft's torch AdamW on the CPU. DeepSpeed prefers its DeepSpeedCPUAdam,
        # whose C++ op compiles on first use (17 min on this project's 2-core CI machine): not worth it here.
        defaults["zero_force_ds_cpu_optimizer"] = False
    return defaults


def build_deepspeed_config(config: ExperimentConfig, hidden_size: int | None = None) -> dict[str, Any]:
    """The complete DeepSpeed config for this experiment (raises ConfigError on conflicts);
    `hidden_size` (the model's) sizes the communication buckets."""
    zero = config.train.deepspeed
    assert zero is not None, "build_deepspeed_config needs train.backend=deepspeed"
    user = read_user_config(zero.config) if zero.config else {}
    for key, why in _NOT_ALLOWED.items():
        if key in user:
            raise ConfigError(f"train.deepspeed.config: {key!r} in {zero.config} is not allowed: {why}")
    owned = owned_settings(config)
    flat_user = _flatten(user)
    for key, (value, origin) in owned.items():
        if key in flat_user and flat_user[key] != value:
            raise ConfigError(
                f"train.deepspeed.config: {key}={flat_user[key]!r} in {zero.config} conflicts with {origin} "
                f"(which gives {value!r}); remove it from the JSON or change {origin}"
            )
        shadow = _value_above(key, flat_user)
        if shadow is not None:
            raise ConfigError(f"train.deepspeed.config: {shadow} in {zero.config} must be a section (it holds {key}, from {origin})")
    merged = _merge(default_settings(config, hidden_size), user)
    for key, (value, _) in owned.items():
        _set(merged, key, value)
    return merged


def with_precision(ds_config: dict[str, Any], precision: str) -> dict[str, Any]:
    """A copy with the precision switched (the worker's fallback when the hardware lacks one)."""
    result = copy.deepcopy(ds_config)
    _set(result, "bf16.enabled", precision == "bf16")
    _set(result, "fp16.enabled", precision == "fp16")
    return result


def read_user_config(path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"train.deepspeed.config: {path!r} not found")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"train.deepspeed.config: {path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"train.deepspeed.config: {path} must hold a JSON object")
    return raw


def write_deepspeed_config(ds_config: dict[str, Any], run_dir: Path) -> Path:
    """Save the config next to the run's config.yaml, so a user can read what DeepSpeed got."""
    path = run_dir / DEEPSPEED_CONFIG_FILE
    path.write_text(json.dumps(ds_config, indent=2, sort_keys=True) + "\n")
    return path


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _value_above(key: str, flat_user: dict[str, Any]) -> str | None:
    """The user key holding a plain value where rayft needs a section (e.g. "offload_optimizer": null)."""
    parts = key.split(".")
    return next((".".join(parts[:depth]) for depth in range(1, len(parts)) if ".".join(parts[:depth]) in flat_user), None)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value
