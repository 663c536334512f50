"""Evaluation pieces for a classification head (model.head: sequence_classification).

evaluate_split (validation.py) calls these where a causal LM would score tokens and generate:
the loss is the cross-entropy per example (summed, with the count of scored examples, so ranks
all-reduce it like token losses), the answer is the label of the highest logit (always inside the
label set), and the majority-class baseline is what a trained head has to beat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rayft.data.classification import collate_classification
from rayft.data.tokenize import IGNORE_INDEX


def head_loss_sums(model: nn.Module, examples: Sequence[Any], pad_id: int, batch_size: int) -> tuple[float, float]:
    """(summed cross-entropy, scored examples); fillers labelled IGNORE_INDEX (ZeRO-3 lockstep) count for nothing."""
    device = next(model.parameters()).device
    loss_sum, count = 0.0, 0.0
    for start in range(0, len(examples), batch_size):
        batch = collate_classification(list(examples[start : start + batch_size]), pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        loss_sum += F.cross_entropy(logits, batch["labels"], ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += (batch["labels"] != IGNORE_INDEX).sum().item()
    return loss_sum, count


@torch.no_grad()
def predict_head_labels(model: nn.Module, examples: Sequence[Any], pad_id: int, labels: list[str], batch_size: int) -> list[str]:
    """The label of the highest logit for each example."""
    device = next(model.parameters()).device
    predicted: list[str] = []
    for start in range(0, len(examples), batch_size):
        batch = collate_classification(list(examples[start : start + batch_size]), pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        predicted += [labels[index] for index in logits.argmax(-1).tolist()]
    return predicted


def majority_accuracy(train: Sequence[Any], validation: Sequence[Any]) -> float:
    """Accuracy on validation of always answering the most frequent training label."""
    if not train or not validation:
        return 0.0
    majority, _ = Counter(example.labels[0] for example in train).most_common(1)[0]
    return sum(example.labels[0] == majority for example in validation) / len(validation)
