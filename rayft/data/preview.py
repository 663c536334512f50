"""`rayft data preview`: training examples exactly as the model sees them, trained part marked."""

from __future__ import annotations

import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from rayft.config import ExperimentConfig
from rayft.data.pipeline import read_splits
from rayft.data.split import TRAIN
from rayft.data.tokenize import IGNORE_INDEX

TRAINED_START, TRAINED_END = "[[", "]]"


def render_tokens(input_ids: list[int], labels: list[int], tokenizer: PreTrainedTokenizerBase) -> str:
    """Decode runs of masked and trained tokens separately; trained runs go inside [[ ]]."""
    parts: list[str] = []
    start = 0
    for end in range(1, len(input_ids) + 1):
        if end == len(input_ids) or (labels[end] == IGNORE_INDEX) != (labels[start] == IGNORE_INDEX):
            text = tokenizer.decode(input_ids[start:end], skip_special_tokens=False)
            parts.append(text if labels[start] == IGNORE_INDEX else f"{TRAINED_START}{text}{TRAINED_END}")
            start = end
    return "".join(parts)


def preview(config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, count: int) -> list[str]:
    """The first `count` training rows, formatted and tokenized as training would."""
    with tempfile.TemporaryDirectory() as scratch:
        by_split = read_splits(config, Path(scratch), tokenizer).by_split
    shown = []
    for row in by_split[TRAIN][:count]:
        where = f"{row['source']}:{row['line']}"
        features = row["features"]
        if features["drop_reason"]:
            shown.append(f"--- {where} (filtered: {features['drop_reason']})")
        elif config.model.head == "sequence_classification":  # a head reads the text; the label is no token
            text = tokenizer.decode(features["input_ids"])
            shown.append(f"--- {where}  {features['length']} tokens, label {features['reference']!r}\n{text}")
        else:
            trained = sum(label != IGNORE_INDEX for label in features["labels"])
            header = f"--- {where}  {features['length']} tokens, {trained} trained"
            shown.append(f"{header}\n{render_tokens(features['input_ids'], features['labels'], tokenizer)}")
    return shown
