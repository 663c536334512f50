"""Validation of a classification head: loss, accuracy and macro-F1 (scikit-learn), and the
majority-class baseline a trained head has to beat.

Each worker scores every world-th example; the (label, prediction, loss) triples are gathered,
so every rank computes the same metrics over the whole split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from rayft.data.classification import collate_classification


def _gather(items: list[Any]) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return items
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


@torch.no_grad()
def evaluate_classification(
    model: nn.Module, pad_token_id: int, examples: Sequence[Any], batch_size: int, rank: int, world_size: int
) -> dict[str, float]:
    """eval_loss (mean cross-entropy per example), accuracy and f1_macro over the whole validation split."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mine = list(examples[rank::world_size])
    scored: list[tuple[int, int, float]] = []
    for start in range(0, len(mine), batch_size):
        batch = collate_classification(mine[start : start + batch_size], pad_token_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        losses = F.cross_entropy(logits, batch["labels"], reduction="none")
        scored += zip(batch["labels"].tolist(), logits.argmax(-1).tolist(), losses.tolist())
    if was_training:
        model.train()
    everything = _gather(scored)
    labels, predictions, losses = zip(*everything) if everything else ((), (), ())
    return {
        "eval_loss": sum(losses) / max(len(losses), 1),
        "accuracy": float(accuracy_score(labels, predictions)) if labels else 0.0,
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)) if labels else 0.0,
    }


def majority_accuracy(train: Sequence[Any], validation: Sequence[Any]) -> float:
    """Accuracy on validation of always answering the most frequent training label."""
    if not train or not validation:
        return 0.0
    majority, _ = Counter(example.labels[0] for example in train).most_common(1)[0]
    return sum(example.labels[0] == majority for example in validation) / len(validation)
