"""Examples for a classification head: the text's token ids and one label id per row.

A head needs no prompt and no answer tokens: the text is encoded with the tokenizer's special
tokens ([CLS] ... [SEP] for BERT), and the label becomes an index into the label set, which is
every distinct label in the data (all splits, so a label seen only in validation still gets an
output), sorted numerically when all labels are integers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rayft.config import DataConfig
from rayft.data.formats import format_record
from rayft.data.tokenize import Dropped, TokenizedExample

LABELS_FILE = "labels.json"


def label_of(record: dict[str, Any], data: DataConfig) -> str:
    return str(record[data.column("label")]).strip()


def label_names(records: Iterable[str], data: DataConfig) -> list[str]:
    """The sorted label set of rows holding their record as JSON (as the pipeline keeps them)."""
    return sorted_labels(label_of(json.loads(record), data) for record in records)


def sorted_labels(labels: Iterable[str]) -> list[str]:
    """Distinct labels in id order: numerically when all are integers ("2" before "10"), else by name."""
    distinct = set(labels)
    if all(label.lstrip("-").isdigit() for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def head_text(record: dict[str, Any], data: DataConfig) -> str:
    """What the head reads: the text column, or the user's template (to combine several columns)."""
    if data.template is None:
        return str(record[data.column("text")]).strip()
    prompt, _ = format_record(record, data).segments[0]
    return prompt


def tokenize_for_head(
    record: dict[str, Any], data: DataConfig, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int]
) -> TokenizedExample | Dropped:
    """Token ids with special tokens, and the label id as the only label; overlength as configured
    (truncate keeps the start of the text and the closing special token). The whole text is the
    prompt (prompt_len): evaluation hands it to the head, which answers with a label."""
    text = head_text(record, data)
    input_ids = list(tokenizer(text)["input_ids"])
    truncated = len(input_ids) > data.max_length
    if truncated:
        if data.overlength != "truncate":
            return Dropped("overlength", f"{len(input_ids)} tokens > max_length {data.max_length}")
        input_ids = list(tokenizer(text, truncation=True, max_length=data.max_length)["input_ids"])
    return TokenizedExample(input_ids, [label2id[label_of(record, data)]], prompt_len=len(input_ids), truncated=truncated)


def collate_classification(examples: Sequence[Any], pad_id: int, device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Right-padded input ids with their attention mask, and one label per row."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention_mask[row, : len(example.input_ids)] = 1
    labels = torch.tensor([example.labels[0] for example in examples], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return {key: value.to(device) for key, value in batch.items()} if device is not None else batch
