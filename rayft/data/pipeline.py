"""From configured files to tokenized Ray Datasets, with every row accounted for.

read -> validate (bad rows quarantined with file and line) -> format -> split -> tokenize on
Ray Data (rows too long or with nothing to train on are filtered, with reasons).
Counts reconcile: read = kept + quarantined + filtered.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.data

from rayft.config import DataConfig, ExperimentConfig
from rayft.data.classification import label_of, tokenize_for_head
from rayft.data.formats import format_record, validate_record
from rayft.data.readers import DataError, RowProblem, expand_paths, read_rows
from rayft.data.split import TEST, TRAIN, VAL, assign_folds, assign_splits, parse_time
from rayft.data.tokenize import Dropped, tokenize_formatted

QUARANTINE_FILE = "quarantine.jsonl"
SUMMARY_FILE = "data_summary.json"


@dataclass
class DataCounts:
    read: int = 0
    kept: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)


@dataclass
class PreparedData:
    train: ray.data.Dataset
    validation: ray.data.Dataset | None
    counts: DataCounts


@dataclass
class _ReadResult:
    rows: list[dict[str, Any]]
    problems: list[RowProblem]


def _read_and_validate(spec: str | list[str], key: str, data: DataConfig) -> _ReadResult:
    """Valid rows keep their record (as JSON, so mixed schemas share one column) and the index of
    the `spec` entry they came from (for weighted mixing); bad rows become problems."""
    rows: list[dict[str, Any]] = []
    problems: list[RowProblem] = []
    entries = [spec] if isinstance(spec, str) else spec
    for entry, path in ((entry, path) for entry, pattern in enumerate(entries) for path in expand_paths(pattern, key)):
        for row in read_rows(path):
            reason = row.error or validate_record(row.record or {}, data) or _split_key_problem(row.record or {}, data)
            if reason is not None:
                kind, _, detail = reason.partition(": ")
                raw = "" if row.record is None else json.dumps(row.record, ensure_ascii=False)[:2000]
                problems.append(RowProblem(row.source, row.line, kind, detail, raw))
                continue
            rows.append({"source": row.source, "line": row.line, "entry": entry, "record": json.dumps(row.record, ensure_ascii=False)})
    return _ReadResult(rows, problems)


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


def _split_labels(rows: list[dict[str, Any]], data: DataConfig, carve_val: bool) -> list[str]:
    """Each row's split, from the split keys in its record (and the fold, under k-fold)."""
    split = data.split
    records = [json.loads(row["record"]) for row in rows] if split.stratify_by or split.time_column else []
    strata = [json.dumps(r[split.stratify_by]) for r in records] if split.stratify_by else None
    times = [parse_time(r[split.time_column]) or 0.0 for r in records] if split.time_column else None
    labels = assign_splits(len(rows), split, carve_val=carve_val and data.kfold is None, strata=strata, times=times)
    if data.kfold is None:
        return labels
    if data.kfold.fold is None:
        raise ValueError("data.kfold.fold must be chosen before splitting (rayft.train runs every fold)")
    folds = assign_folds(labels, data.kfold, split.seed, strata)
    return [TEST if label == TEST else VAL if fold == data.kfold.fold else TRAIN for label, fold in zip(labels, folds)]


def _check_usable(result: _ReadResult, key: str, data: DataConfig, quarantine: Path) -> None:
    total = len(result.rows) + len(result.problems)
    if total == 0:
        raise DataError(f"{key}: the files hold no rows; add data or point {key} elsewhere")
    if not result.rows:
        first = result.problems[0]
        raise DataError(
            f"{key}: all {total} rows are bad (first: {first.source}:{first.line} {first.reason}: {first.detail}); "
            f"see {quarantine}"
        )
    fraction = len(result.problems) / total
    if fraction > data.max_bad_fraction:
        first = result.problems[0]
        raise DataError(
            f"{key}: {len(result.problems)} of {total} rows are bad ({fraction:.1%} > data.max_bad_fraction "
            f"{data.max_bad_fraction}); first: {first.source}:{first.line} {first.reason}: {first.detail}; see {quarantine}"
        )


@lru_cache(maxsize=4)
def _cached_tokenizer(path: str, need_eos: bool = True) -> Any:
    from rayft.models.loading import load_tokenizer

    return load_tokenizer(path, need_eos=need_eos)


class _TokenizeBatch:
    """Ray Data transform: format and tokenize a batch, marking (not raising on) rows to filter.
    With `label2id` (a classification head) rows become text ids and one label id instead."""

    def __init__(self, tokenizer_path: str, data: DataConfig, label2id: dict[str, int] | None = None) -> None:
        self.tokenizer_path = tokenizer_path
        self.data = data
        self.label2id = label2id

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        tokenizer = _cached_tokenizer(self.tokenizer_path, need_eos=self.label2id is None)
        columns: dict[str, list[Any]] = {"input_ids": [], "labels": [], "prompt_len": [], "reference": [], "drop_reason": []}
        for record in batch["record"]:
            result: Any
            reference = ""
            try:
                if self.label2id is not None:
                    parsed = json.loads(record)
                    reference = label_of(parsed, self.data)
                    result = tokenize_for_head(parsed, self.data, tokenizer, self.label2id)
                else:
                    example = format_record(json.loads(record), self.data, tokenizer)
                    reference = example.reference
                    result = tokenize_formatted(example, tokenizer, self.data)
            except ValueError as err:  # a chat template that cannot be split into turns
                result = Dropped("unformattable", str(err))
            dropped = isinstance(result, Dropped)
            columns["input_ids"].append([] if dropped else result.input_ids)
            columns["labels"].append([] if dropped else result.labels)
            columns["prompt_len"].append(0 if dropped else result.prompt_len)
            columns["reference"].append(reference)
            columns["drop_reason"].append(f"{result.reason}: {result.detail}" if dropped else "")
        return batch.assign(**columns)


def _tokenize(rows: list[dict[str, Any]], tokenizer_path: str, data: DataConfig, label2id: dict[str, int] | None) -> ray.data.Dataset:
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(8, len(rows) // 512)))
    return dataset.map_batches(_TokenizeBatch(tokenizer_path, data, label2id), batch_format="pandas").materialize()


def _filtered_rows(dataset: ray.data.Dataset) -> list[dict[str, Any]]:
    return dataset.filter(lambda row: row["drop_reason"] != "").select_columns(["source", "line", "drop_reason"]).take_all()


def _kept(dataset: ray.data.Dataset) -> ray.data.Dataset:
    columns = ["idx", "input_ids", "labels", "prompt_len", "reference"]
    kept = dataset.filter(lambda row: row["drop_reason"] == "").select_columns(columns).materialize()
    # Workers read these materialized blocks in milliseconds; a progress bar per read is noise.
    kept.context.enable_progress_bars = False
    return kept


@dataclass
class SplitRows:
    """Validated, formatted rows per split: the Ray-free first stage, so bad data fails before Ray starts."""

    by_split: dict[str, list[dict[str, Any]]]
    counts: DataCounts


def check_data_paths(data: DataConfig) -> None:
    """Fail in milliseconds on a missing or unsupported data file, before anything slower runs."""
    expand_paths(data.train, "data.train")
    if data.validation:
        expand_paths(data.validation, "data.validation")


def read_splits(config: ExperimentConfig, run_dir: Path) -> SplitRows:
    """Read, validate and split; write quarantine.jsonl into run_dir. Raises DataError on unusable data."""
    data = config.data
    quarantine = run_dir / QUARANTINE_FILE
    train_read = _read_and_validate(data.train, "data.train", data)
    val_read = _read_and_validate(data.validation, "data.validation", data) if data.validation else None

    problems = train_read.problems + (val_read.problems if val_read else [])
    run_dir.mkdir(parents=True, exist_ok=True)
    with quarantine.open("w") as handle:
        for problem in problems:
            handle.write(json.dumps(problem.as_dict(), ensure_ascii=False) + "\n")
    _check_usable(train_read, "data.train", data, quarantine)
    if val_read is not None:
        _check_usable(val_read, "data.validation", data, quarantine)

    labels = _split_labels(train_read.rows, data, carve_val=val_read is None)
    by_split: dict[str, list[dict[str, Any]]] = {TRAIN: [], VAL: [], TEST: []}
    for row, label in zip(train_read.rows, labels):
        by_split[label].append(row)
    if val_read is not None:
        by_split[VAL] = val_read.rows
    mixed_out = 0
    if data.weights is not None:
        by_split[TRAIN], mixed_out = mix_by_weight(by_split[TRAIN], data.weights, data.split.seed)
    for rows in by_split.values():
        for index, row in enumerate(rows):
            row["idx"] = index
    counts = DataCounts(
        read=len(train_read.rows) + (len(val_read.rows) if val_read else 0) + len(problems),
        quarantined=dict(Counter(p.reason for p in problems)),
        filtered={"mixed_out": mixed_out} if mixed_out else {},
    )
    return SplitRows(by_split, counts)


def mix_by_weight(rows: list[dict[str, Any]], weights: list[float], seed: int) -> tuple[list[dict[str, Any]], int]:
    """Keep the largest training set whose entries stand in the given proportions without
    repeating a row: total = min(rows of entry i / share i); each entry keeps a seeded sample.
    Returns the kept rows (in their original order) and how many were left out."""
    shares = [w / sum(weights) for w in weights]
    by_entry: dict[int, list[int]] = {i: [] for i in range(len(weights))}
    for index, row in enumerate(rows):
        by_entry[row["entry"]].append(index)
    empty = [i for i, members in by_entry.items() if not members]
    if empty:
        raise DataError(f"data.weights: data.train entry {empty[0]} has no training rows to mix in")
    total = min(len(by_entry[i]) / share for i, share in enumerate(shares))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for i, share in enumerate(shares):
        members = by_entry[i]
        chosen = rng.choice(len(members), size=min(len(members), round(total * share)), replace=False)
        keep += [members[c] for c in chosen]
    return [rows[i] for i in sorted(keep)], len(rows) - len(keep)


def tokenize_splits(
    split_rows: SplitRows, config: ExperimentConfig, tokenizer_path: str, run_dir: Path, labels: list[str] | None = None
) -> PreparedData:
    """Tokenize each split on Ray Data; filter (and count) rows that cannot train; write data_summary.json.
    `labels` (a classification head's label set) turns each row into text ids and a label id."""
    label2id = {label: index for index, label in enumerate(labels)} if labels is not None else None
    data = config.data
    counts = split_rows.counts
    datasets: dict[str, ray.data.Dataset] = {}
    filtered: Counter[str] = Counter()
    for name, rows in split_rows.by_split.items():
        if not rows:
            counts.splits[name] = 0
            continue
        tokenized = _tokenize(rows, tokenizer_path, data, label2id)
        dropped = _filtered_rows(tokenized)
        overlong = [d for d in dropped if d["drop_reason"].startswith("overlength")]
        if overlong and data.overlength == "error":
            first = overlong[0]
            raise DataError(
                f"{first['source']}:{first['line']}: {first['drop_reason']} (data.overlength is 'error'; "
                "raise data.max_length or choose drop/truncate)"
            )
        filtered.update(d["drop_reason"].partition(":")[0] for d in dropped)
        datasets[name] = _kept(tokenized)
        counts.splits[name] = len(rows) - len(dropped)
    counts.filtered = dict(Counter(counts.filtered) + filtered)
    counts.kept = sum(counts.splits.values())
    (run_dir / SUMMARY_FILE).write_text(json.dumps(asdict(counts), indent=2) + "\n")
    if counts.splits.get(TRAIN, 0) == 0:
        raise DataError(f"data.train: no training rows left after filtering ({counts.filtered}); see {run_dir / SUMMARY_FILE}")
    return PreparedData(train=datasets[TRAIN], validation=datasets.get(VAL), counts=counts)
