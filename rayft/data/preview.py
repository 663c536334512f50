"""`rayft data preview`: training examples exactly as the model sees them, trained part marked."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from rayft.config import ExperimentConfig
from rayft.data.classification import head_text, label_of
from rayft.data.formats import format_record
from rayft.data.pipeline import read_splits
from rayft.data.split import TRAIN
from rayft.data.tokenize import IGNORE_INDEX, Dropped, tokenize_formatted

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
    data = config.data
    with tempfile.TemporaryDirectory() as scratch:
        rows = read_splits(config, Path(scratch)).by_split[TRAIN][:count]
    shown = []
    for row in rows:
        where = f"{row['source']}:{row['line']}"
        if config.model.head == "sequence_classification":  # a head reads the text; the label is no token
            record = json.loads(row["record"])
            ids = tokenizer(head_text(record, data))["input_ids"]
            shown.append(f"--- {where}  {len(ids)} tokens, label {label_of(record, data)!r}\n{tokenizer.decode(ids)}")
            continue
        example = format_record(json.loads(row["record"]), data, tokenizer)
        tokens = tokenize_formatted(example, tokenizer, data)
        if isinstance(tokens, Dropped):
            shown.append(f"--- {where} (filtered: {tokens.reason}: {tokens.detail})")
            continue
        trained = sum(label != IGNORE_INDEX for label in tokens.labels)
        header = f"--- {where}  {len(tokens.input_ids)} tokens, {trained} trained"
        shown.append(f"{header}\n{render_tokens(tokens.input_ids, tokens.labels, tokenizer)}")
    return shown
