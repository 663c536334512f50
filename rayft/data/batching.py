"""Per-worker example order and batch collation.

Every worker sees the whole tokenized split and takes every world-th example of a seeded
per-epoch permutation (DistributedSampler semantics). The order is a pure function of
(seed, epoch, rank), which is what makes exact resume possible: a checkpoint only needs the
epoch and the position within it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rayft.data.tokenize import IGNORE_INDEX


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    reference: str
    """What a generation from the prompt should say (empty when there is no single answer)."""
    alternatives: tuple[str, ...] = ()
    """Other valid answers (a list in the answer column): metrics take the best match."""
    position_ids: list[int] | None = None
    """Set on packed examples: positions restart at 0 for every example packed inside."""


def load_examples(rows: Iterable[dict[str, Any]]) -> list[Example]:
    """Examples in their stable `order` (file, line, copy), whatever order the dataset streamed them in."""
    ordered = sorted(rows, key=lambda row: int(row["order"]))
    return [
        Example(
            input_ids=[int(t) for t in row["input_ids"]],
            labels=[int(t) for t in row["labels"]],
            prompt_len=int(row["prompt_len"]),
            reference=str(row["reference"]),
            alternatives=tuple(json.loads(row.get("alternatives") or "[]")),
        )
        for row in ordered
    ]


def epoch_batches(n_examples: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's micro-batches (example indices) for one epoch.

    The permutation is padded by wrapping so every rank gets the same number of batches,
    which keeps DDP collectives and `ray.train.report` calls in step across ranks.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    per_rank = math.ceil(n_examples / world_size)
    padded = np.resize(order, per_rank * world_size)
    mine = padded[rank::world_size].tolist()
    return [mine[start : start + batch_size] for start in range(0, len(mine), batch_size)]


def micro_batches_per_epoch(n_examples: int, batch_size: int, world_size: int) -> int:
    return math.ceil(math.ceil(n_examples / world_size) / batch_size)


def collate(examples: list[Example], pad_id: int, device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a batch into the model's keyword arguments; padding gets label -100 (masked by
    position, so a pad id equal to EOS never hides the trained EOS).

    Unpacked rows get an attention mask. Packed rows get position_ids instead and no mask, which
    transformers turns into a block-diagonal causal mask; the padding tail is a block of its own.
    """
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    packed = any(example.position_ids is not None for example in examples)
    extra = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        if packed:
            positions = example.position_ids if example.position_ids is not None else list(range(length))
            extra[row, :length] = torch.tensor(positions)
            extra[row, length:] = torch.arange(width - length)
        else:
            extra[row, :length] = 1
    batch = {"input_ids": input_ids, "labels": labels, ("position_ids" if packed else "attention_mask"): extra}
    return {key: value.to(device) for key, value in batch.items()} if device is not None else batch
