"""What every op shares: per-row seeding, labels and copy numbers, and the texts an op may change.

Seeds come from the row's identity (file_index, line), never from its position in a block, so
the same seed and input give the same augmented rows whatever the block layout.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from rayft.augment_config import TemplateOp
from rayft.config import DataConfig

AUGMENTED = "augmented"
"""Column naming the op that made a row ("" for original rows)."""

TextKey = tuple[str, int | None]
"""Where a text lives in a record: (column, None) for a string column, (column, turn) for a chat turn."""


def row_rng(*keys: int) -> np.random.Generator:
    """A generator seeded by integers (negative ones fold into the unsigned range numpy needs)."""
    return np.random.default_rng([key % 2**64 for key in keys])


def chosen(seed: int, op_index: int, file_index: int, line: int, p: float) -> bool:
    """Whether op `op_index` augments this source row at all (draw 0 of the row; copies use 1..copies)."""
    if p >= 1 or p <= 0:
        return p >= 1
    return bool(row_rng(seed, op_index, file_index, line, 0).random() < p)


def op_labels(specs: list[Any]) -> list[str]:
    """The `augmented` value per op: its name, suffixed with its index when the name repeats."""
    repeats = Counter(spec.op for spec in specs)
    return [spec.op if repeats[spec.op] == 1 else f"{spec.op}.{index}" for index, spec in enumerate(specs)]


def copy_offsets(specs: list[Any]) -> list[int]:
    """Op i's copy k gets copy number offsets[i] + k: distinct over ops, 1..255 (checked by the config)."""
    offsets, total = [], 0
    for spec in specs:
        offsets.append(total)
        total += 0 if isinstance(spec, TemplateOp) else spec.copies
    return offsets


def target_columns(fields: list[str] | None, data: DataConfig) -> list[str]:
    """Columns an op changes: the listed roles/columns, or every role but the answer (the prompt side)."""
    roles = data.task.roles
    if fields is None:
        return [data.column(role) for role in roles if role != data.task.answer]
    return [data.column(name) if name in roles else name for name in fields]


def field_texts(record: dict[str, Any], columns: list[str]) -> list[tuple[TextKey, str]]:
    """The non-blank texts of `columns`; for chat messages, the user turns (assistant turns are the answer)."""
    texts: list[tuple[TextKey, str]] = []
    for column in columns:
        value = record.get(column)
        if isinstance(value, str) and value.strip():
            texts.append(((column, None), value))
        elif isinstance(value, list):
            for turn, message in enumerate(value):
                if isinstance(message, dict) and message.get("role") == "user" and str(message.get("content", "")).strip():
                    texts.append(((column, turn), message["content"]))
    return texts


def with_texts(record: dict[str, Any], replacements: dict[TextKey, str]) -> dict[str, Any]:
    """A copy of `record` with the given texts replaced (the input is not modified)."""
    result = dict(record)
    for (column, turn), text in replacements.items():
        if turn is None:
            result[column] = text
        else:
            if result[column] is record[column]:  # copy the turns once, before the first change
                result[column] = [dict(message) for message in record[column]]
            result[column][turn]["content"] = text
    return result


def copy_row(source: dict[str, Any], record: dict[str, Any], copy: int, label: str) -> dict[str, Any]:
    """An augmented row: the source row's columns with a new record, copy number and label."""
    return {**source, "record": json.dumps(record, ensure_ascii=False), "copy": copy, AUGMENTED: label}


def marked(batch: pd.DataFrame) -> pd.DataFrame:
    """The batch with its `augmented` column; rows without one are originals."""
    return batch if AUGMENTED in batch.columns else batch.assign(**{AUGMENTED: ""})


def with_copies(batch: pd.DataFrame, copies: list[dict[str, Any]]) -> pd.DataFrame:
    """The batch's rows followed by the augmented copies, with the batch's column types."""
    rows = marked(batch)
    if not copies:
        return rows
    made = pd.DataFrame(copies, columns=rows.columns).astype(rows.dtypes.to_dict())
    return pd.concat([rows, made], ignore_index=True)
