"""Per-row steps shared by the Ray Data pipeline and the in-process reader.

Validate a file's rows (bad ones keep their file, line and reason), give every row a stable
order key, and turn a record into tokens plus the facts the quality report needs. Both drivers
in pipeline.py call these, so a preview, a report and a training run see the same rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Iterator
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from rayft.config import DataConfig
from rayft.data.classification import head_text, label_of, tokenize_for_head
from rayft.data.formats import format_record, validate_record
from rayft.data.readers import expand_paths, read_rows
from rayft.data.split import parse_time
from rayft.data.tokenize import Dropped, tokenize_formatted

KEY_COLUMNS = ["file_index", "line", "entry", "copy", "reason", "stratum", "time"]
"""A row's position (file, line, copy), mixing entry, quarantine reason and split keys."""
ROW_COLUMNS = ["source", *KEY_COLUMNS, "record", "detail", "raw"]

_FILE_OFFSET = 256  # file_index may be negative (-1 - op) for synthetic rows made by augmentation
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def source_files(spec: str | list[str], key: str, first_index: int = 0) -> list[dict[str, Any]]:
    """One item per file: its path, which `spec` entry it came from (for mixing) and a global index."""
    entries = [spec] if isinstance(spec, str) else spec
    files = [(entry, path) for entry, pattern in enumerate(entries) for path in expand_paths(pattern, key)]
    return [{"path": path, "entry": entry, "file_index": first_index + i} for i, (entry, path) in enumerate(files)]


def validated_rows(item: dict[str, Any], data: DataConfig) -> Iterator[dict[str, Any]]:
    """Every row of one file with ROW_COLUMNS: good rows carry their record as JSON (so mixed
    schemas share one column) and their split keys; bad rows carry the reason instead."""
    for row in read_rows(item["path"]):
        record = row.record or {}
        reason = row.error or validate_record(record, data) or _split_key_problem(record, data)
        out: dict[str, Any] = {
            "source": row.source, "file_index": item["file_index"], "line": row.line, "entry": item["entry"], "copy": 0,
            "reason": "", "detail": "", "raw": "", "record": "", "stratum": "", "time": math.nan,
        }
        if reason is not None:
            kind, _, detail = reason.partition(": ")
            raw = "" if row.record is None else json.dumps(row.record, ensure_ascii=False)[:2000]
            out |= {"reason": kind, "detail": detail, "raw": raw}
        else:
            split = data.split
            out["record"] = json.dumps(record, ensure_ascii=False)
            if split.stratify_by is not None:
                out["stratum"] = json.dumps(record[split.stratify_by])
            if split.time_column is not None:
                out["time"] = parse_time(record[split.time_column])
        yield out


def _split_key_problem(record: dict[str, Any], data: DataConfig) -> str | None:
    """Rows must carry the columns the split is keyed on."""
    split = data.split
    if split.stratify_by is not None:
        value = record.get(split.stratify_by)
        if value is None or isinstance(value, (dict, list)):
            return f"missing_field: {split.stratify_by!r} (data.split.stratify_by) must hold a plain value"
    if split.time_column is not None and parse_time(record.get(split.time_column)) is None:
        return f"bad_time: {split.time_column!r} must be a number or an ISO date, got {record.get(split.time_column)!r}"
    return None


def order_key(file_index: Any, line: Any, copy: Any) -> Any:
    """A single int64 that orders rows by (file, line, copy), whatever order Ray streamed them in.
    Works on ints and on numpy/pandas columns alike."""
    return (np.int64(_FILE_OFFSET) + file_index) * np.int64(2**40) + line * np.int64(256) + copy


def normalise(text: str) -> str:
    """Case, punctuation and spacing folded: near-identical rows collide."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def _digest(text: str) -> int:
    """A 63-bit fingerprint (never 0, which marks 'no text'): 8 bytes a row in the driver's stats."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1 or 1


FEATURE_COLUMNS = [
    "input_ids", "labels", "prompt_len", "reference", "alternatives", "drop_reason", "text_hash", "norm_hash", "label", "empty_roles", "length",
    "truncated",
]
STAT_COLUMNS = ["text_hash", "norm_hash", "label", "empty_roles", "length", "drop_reason", "truncated"]
"""What the quality report needs of each row: small enough to gather in the driver."""


def row_features(
    record_json: str, data: DataConfig, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int] | None = None
) -> dict[str, Any]:
    """Tokens and labels for training, and the report's facts (fingerprints of the exact and
    normalised text, 0 when the row could not be formatted; label, empty optional roles, token
    length, whether data.overlength truncate cut it, why the row cannot train). With `label2id` (a classification head) the tokens are the
    text alone and the only label is the label's id."""
    record = json.loads(record_json)
    optional = [role for role, required in data.task.roles.items() if not required]
    empty = [role for role in optional if _is_empty(record.get(data.column(role)))]
    out: dict[str, Any] = {
        "input_ids": [], "labels": [], "prompt_len": 0, "reference": "", "alternatives": "[]", "drop_reason": "", "text_hash": 0,
        "norm_hash": 0, "label": "", "empty_roles": ",".join(empty), "length": 0, "truncated": False,
    }
    try:
        if label2id is not None:
            text = head_text(record, data)
            label = reference = label_of(record, data)
            tokens = tokenize_for_head(record, data, tokenizer, label2id)
        else:
            example = format_record(record, data, tokenizer)
            text, label, reference = "".join(segment for segment, _ in example.segments), example.label or "", example.reference
            out["alternatives"] = json.dumps(list(example.alternatives))  # JSON: empty lists have no Arrow type
            tokens = tokenize_formatted(example, tokenizer, data)
    except ValueError as err:  # a chat template that cannot be split into turns
        return out | {"drop_reason": f"unformattable: {err}"}
    out |= {"reference": reference, "text_hash": _digest(text), "norm_hash": _digest(normalise(text)), "label": label}
    if isinstance(tokens, Dropped):
        return out | {"drop_reason": f"{tokens.reason}: {tokens.detail}"}
    return out | {
        "input_ids": tokens.input_ids, "labels": tokens.labels, "prompt_len": tokens.prompt_len, "length": len(tokens.input_ids),
        "truncated": tokens.truncated,
    }


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
