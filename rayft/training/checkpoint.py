"""Checkpoints that resume exactly and count only when complete.

Layout of one checkpoint directory:
  model/                   Hugging Face format (adapter only for PEFT methods, the bottleneck
                           adapters' own files for `adapter`; gathered from every rank under ZeRO-3) + tokenizer
  trainable.safetensors    methods that train part of the model: every trained tensor by name, what
                           resume and `rayft eval` load (peft saves a prefix MLP only as its output)
  trainer_state.pt         progress and every rank's RNG states; optimizer and scheduler (torch engine)
  deepspeed/               DeepSpeed engine only: each rank's shard of weights, optimizer and scheduler
  rayft_checkpoint.json    marker written last; lists every file of every rank with its size:
                           a directory without it, or missing a listed file, is incomplete
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayft.models.methods.adapter import WEIGHTS_FILE, has_adapters, save_adapters
from rayft.models.methods.context import trained_tensors

MARKER_FILE = "rayft_checkpoint.json"
STATE_FILE = "trainer_state.pt"
TRAINABLE_FILE = "trainable.safetensors"
MODEL_DIR = "model"


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint directory without its completion marker (a save that crashed midway)."""


@dataclass
class Progress:
    """Where training stands: the optimizer step and the data position that comes next."""

    step: int = 0
    epoch: int = 0
    micro_batch: int = 0
    early_stopping: dict[str, Any] | None = None
    """EarlyStopping.state_dict() after the last evaluation, so a resumed run stops where it would have."""


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: Progress,
    rank_rng_states: list[dict[str, Any]],
    metrics: dict[str, float],
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write a complete checkpoint into `directory` (rank 0 only); the marker goes last."""
    save_model(directory, model, tokenizer)
    engine_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if scaler is not None:
        engine_state["scaler"] = scaler.state_dict()
    save_trainer_state(directory, progress, rank_rng_states, engine_state)
    write_marker(directory, progress.step, len(rank_rng_states), metrics, list_files(directory))


def save_model(
    directory: Path, model: nn.Module, tokenizer: PreTrainedTokenizerBase, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """The Hugging Face export, and the trained tensors of a method that trains part of the model.

    `state_dict` when the model's own tensors are shards (ZeRO-3; gathered with the frozen ones
    left out when part of the model trains, so it holds exactly the trained tensors)."""
    trained = state_dict if state_dict is not None else trained_tensors(model)
    if has_adapters(model):
        save_adapters(model, directory / MODEL_DIR, trained)
    else:
        model.save_pretrained(directory / MODEL_DIR, state_dict=state_dict)
    tokenizer.save_pretrained(directory / MODEL_DIR)
    if any(not p.requires_grad for p in model.parameters()):
        save_file({name: tensor.contiguous() for name, tensor in trained.items()}, directory / TRAINABLE_FILE)


def save_trainer_state(
    directory: Path, progress: Progress, rank_rng_states: list[dict[str, Any]], engine_state: dict[str, Any]
) -> None:
    torch.save({**engine_state, "progress": asdict(progress), "rng": rank_rng_states}, directory / STATE_FILE)


def list_files(directory: Path) -> dict[str, int]:
    """Relative path -> size of every file under `directory`."""
    return {str(path.relative_to(directory)): path.stat().st_size for path in sorted(directory.rglob("*")) if path.is_file()}


def write_marker(directory: Path, step: int, world_size: int, metrics: dict[str, Any], files: dict[str, int]) -> None:
    """The completion marker, written after every file it lists (by every rank) is complete."""
    marker = {"step": step, "world_size": world_size, "metrics": metrics, "files": files, "complete": True}
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def read_marker(directory: Path) -> dict[str, Any]:
    marker_path = directory / MARKER_FILE
    if not marker_path.is_file():
        raise IncompleteCheckpointError(f"{directory} has no {MARKER_FILE}: the save did not finish")
    marker = json.loads(marker_path.read_text())
    for name, size in marker.get("files", {}).items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            raise IncompleteCheckpointError(f"{directory}: {name} is missing or incomplete (the marker lists {size} bytes)")
    return marker


def check_marker(directory: Path, world_size: int) -> dict[str, Any]:
    """The marker, after checking that the checkpoint is complete and fits this many workers."""
    marker = read_marker(directory)
    if marker["world_size"] != world_size:
        raise IncompleteCheckpointError(
            f"{directory} was written by {marker['world_size']} workers; resume with scaling.num_workers={marker['world_size']}"
        )
    return marker


def load_trainer_state(directory: Path, rank: int) -> Progress:
    """Set this rank's RNG as it was at the save; return the progress (and keep the rest in the file)."""
    state = torch.load(directory / STATE_FILE, weights_only=False)
    set_rng_state(state["rng"][rank])
    return Progress(**state["progress"])


def load_checkpoint_weights(model: nn.Module, model_dir: Path) -> None:
    """Load trained weights into a model built the same way (base, head, method): from the exact
    trained tensors next to a checkpoint's model/ folder when there are some, else from the folder."""
    trainable = model_dir.parent / TRAINABLE_FILE
    if model_dir.name == MODEL_DIR and trainable.is_file():
        load_trainable(model, trainable)
    else:
        load_trained_weights(model, model_dir)


def load_trainable(model: nn.Module, path: Path) -> None:
    """Load every trained tensor back by name; the names must be exactly the model's trainable ones."""
    saved = load_file(path)
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(saved) != expected:
        raise IncompleteCheckpointError(
            f"{path}: trained tensors do not match the model (missing {sorted(expected - set(saved))[:3]}, "
            f"unexpected {sorted(set(saved) - expected)[:3]}); was it written by another method?"
        )
    model.load_state_dict(saved, strict=False)


def load_trained_weights(model: nn.Module, model_dir: Path) -> None:
    """Load what `save_model` wrote into model/ back into a model built the same way."""
    if has_adapters(model):
        load_trainable(model, model_dir / WEIGHTS_FILE)
        return
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(model_dir / "adapter_model.safetensors"))
        return
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):  # one file, or the shards of a large model
        state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise IncompleteCheckpointError(f"{model_dir}: weights do not match the model (missing {missing}, unexpected {unexpected})")


def restore_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int,
    world_size: int,
    scaler: torch.amp.GradScaler | None = None,
) -> Progress:
    """Load weights, optimizer, scheduler (and loss scaler) and this rank's RNG; return where to continue."""
    check_marker(directory, world_size)
    load_checkpoint_weights(model, directory / MODEL_DIR)
    state = torch.load(directory / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"][rank])
    return Progress(**state["progress"])
