"""Checkpoints that resume exactly and count only when complete.

Layout of one checkpoint directory:
  model/                   Hugging Face format (adapter only for PEFT methods, the bottleneck
                           adapters' own files for `adapter`) + tokenizer
  trainable.safetensors    every trained tensor by name (methods that train part of the model):
                           what resume loads, exactly (peft saves a prefix MLP only as its output)
  trainer_state.pt         optimizer, scheduler, progress and every rank's RNG states
  rayft_checkpoint.json    marker written last; a directory without it is incomplete
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

from rayft.models.methods import save_model

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
) -> None:
    """Write a complete checkpoint into `directory` (rank 0 only); the marker goes last."""
    save_model(model, directory / MODEL_DIR)
    tokenizer.save_pretrained(directory / MODEL_DIR)
    if any(not p.requires_grad for p in model.parameters()):
        save_file({name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}, directory / TRAINABLE_FILE)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": asdict(progress),
            "rng": rank_rng_states,
        },
        directory / STATE_FILE,
    )
    marker = {"step": progress.step, "world_size": len(rank_rng_states), "metrics": metrics, "complete": True}
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def read_marker(directory: Path) -> dict[str, Any]:
    marker = directory / MARKER_FILE
    if not marker.is_file():
        raise IncompleteCheckpointError(f"{directory} has no {MARKER_FILE}: the save did not finish")
    return json.loads(marker.read_text())


def load_trained_weights(model: nn.Module, model_dir: Path) -> None:
    """Load what `save_pretrained` wrote back into a model built the same way."""
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


def restore_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int,
    world_size: int,
) -> Progress:
    """Load weights, optimizer, scheduler and this rank's RNG; return where to continue."""
    marker = read_marker(directory)
    if marker["world_size"] != world_size:
        raise IncompleteCheckpointError(
            f"{directory} was written by {marker['world_size']} workers; resume with scaling.num_workers={marker['world_size']}"
        )
    if (directory / TRAINABLE_FILE).is_file():
        load_trainable(model, directory / TRAINABLE_FILE)
    else:
        load_trained_weights(model, directory / MODEL_DIR)
    state = torch.load(directory / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"][rank])
    return Progress(**state["progress"])
