"""From configured files to tokenized Ray Datasets, with every row accounted for.

read -> validate (bad rows quarantined with file and line) -> split -> augment (train only) ->
format + tokenize (rows too long or with nothing to train are filtered, with reasons).
Counts reconcile: read = kept + quarantined + filtered (augmented rows are counted apart).

Two drivers over the per-row steps in rows.py and the split assignment in split_keys.py:
- `prepare_datasets` (training): Ray Data reads and validates the files (a task per file) and
  formats and tokenizes each split. Nothing per row passes through the driver: Ray tasks next to
  the data assign the splits from the rows' keys (each split's order keys stay in the object
  store) and gather the report's facts (facts.py); the driver gets counts.
- `read_splits` (previews, `rayft data report`, tests): the same steps in-process, without Ray,
  with the same counts (both tally a tokenized split with `_count_split`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.data
from transformers import PreTrainedTokenizerBase

from rayft.config import DataConfig, ExperimentConfig
from rayft.data.augment import augment_train, augmentation_counts, check_augment
from rayft.data.classification import label_names, label_of, sorted_labels
from rayft.data.facts import DataFacts, SplitFacts, summarise_fingerprints
from rayft.data.readers import DataError, expand_paths, read_rows
from rayft.data.rows import ROW_COLUMNS, STAT_COLUMNS, order_key, row_features, source_files, validated_rows
from rayft.data.split import TEST, TRAIN, VAL
from rayft.data.split_keys import MIXED_OUT, gather_keys, split_key_columns, split_names

QUARANTINE_FILE = "quarantine.jsonl"
SUMMARY_FILE = "data_summary.json"
SPLITS = (TRAIN, VAL, TEST)
TRAINING_COLUMNS = ["order", "input_ids", "labels", "prompt_len", "reference", "alternatives"]
AUGMENT_INPUT_COLUMNS = ["source", "line", "entry", "file_index", "copy", "record"]


@dataclass
class DataCounts:
    read: int = 0
    kept: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    """Rows each split trains or evaluates on (augmented copies included)."""
    truncated: dict[str, int] = field(default_factory=dict)
    """Per split, input rows cut to max_length (data.overlength truncate): kept, but not whole."""
    augmented: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per augmentation op (training split only): rows added, copies discarded (unchanged from their
    source), added rows filtered at tokenization. Apart from `read`, which counts input rows."""


def check_data_paths(data: DataConfig) -> None:
    """Fail in milliseconds, before Ray starts, on a missing or unsupported data file or on data
    with no rows at all (reading stops at the first row; the full check runs on Ray)."""
    specs = {"data.train": data.train} | ({"data.validation": data.validation} if data.validation else {})
    for key, spec in specs.items():
        paths = [path for pattern in ([spec] if isinstance(spec, str) else spec) for path in expand_paths(pattern, key)]
        if not any(next(iter(read_rows(path)), None) is not None for path in paths):
            raise DataError(f"{key}: the files hold no rows; add data or point {key} elsewhere")
    if data.augment:
        check_augment(data, data.split.seed)


# ---------------------------------------------------------------------------- accounting


def _write_quarantine(problems: Iterable[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row in problems:
            entry = {"source": row["source"], "line": int(row["line"]), "reason": row["reason"], "detail": row["detail"], "raw": row["raw"]}
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _check_usable(total: int, bad: int, first_problem: dict[str, Any] | None, key: str, data: DataConfig, quarantine: Path) -> None:
    if total == 0:
        raise DataError(f"{key}: the files hold no rows; add data or point {key} elsewhere")
    first = "" if first_problem is None else (
        f"first: {first_problem['source']}:{first_problem['line']} {first_problem['reason']}: {first_problem['detail']}"
    )
    if bad == total:
        raise DataError(f"{key}: all {total} rows are bad ({first}); see {quarantine}")
    if bad / total > data.max_bad_fraction:
        raise DataError(
            f"{key}: {bad} of {total} rows are bad ({bad / total:.1%} > data.max_bad_fraction "
            f"{data.max_bad_fraction}); {first}; see {quarantine}"
        )


def _first_problems(rows: Iterable[dict[str, Any]], n_train_files: int) -> dict[str, dict[str, Any]]:
    """The first bad row of data.train and of data.validation (rows arrive in file, line order)."""
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault("data.train" if row["file_index"] < n_train_files else "data.validation", row)
    return first


def _read_counts(total: int, problems: list[dict[str, Any]], mixed_out: int) -> DataCounts:
    """Rows read, quarantined (by reason) and left out by mixing."""
    return DataCounts(
        read=total, quarantined=dict(Counter(row["reason"] for row in problems)), filtered={MIXED_OUT: mixed_out} if mixed_out else {},
    )


def _sources(data: DataConfig) -> tuple[list[dict[str, Any]], int]:
    train = source_files(data.train, "data.train")
    validation = source_files(data.validation, "data.validation", len(train)) if data.validation else []
    return train + validation, len(train)


# ---------------------------------------------------------------------------- in-process driver


@dataclass
class SplitRows:
    """Validated rows per split, read and tokenized in-process (previews, reports, tests); each
    row holds ROW_COLUMNS, its order key and its row_features under "features"."""

    by_split: dict[str, list[dict[str, Any]]]
    counts: DataCounts
    facts: DataFacts
    """What the report needs of each split (see facts.py)."""


def read_splits(config: ExperimentConfig, run_dir: Path, tokenizer: PreTrainedTokenizerBase | None = None) -> SplitRows:
    """Read, validate, split and tokenize without Ray, as a run would; write quarantine.jsonl into
    run_dir. Every split row carries its tokens and report facts under "features" (rows that cannot
    train too, with their drop_reason), so the counts are a run's: read = kept + quarantined +
    filtered. `tokenizer` defaults to the one the run would use."""
    data = config.data
    files, n_train_files = _sources(data)
    rows = [row for item in files for row in validated_rows(item, data)]
    good = [row for row in rows if not row["reason"]]
    problems = [row for row in rows if row["reason"]]
    quarantine = run_dir / QUARANTINE_FILE
    _write_quarantine(problems, quarantine)
    _check_all_usable(sum(1 for row in rows if row["file_index"] < n_train_files), len(rows), problems, data, n_train_files, quarantine)
    keys = pd.DataFrame(good, columns=split_key_columns(data))
    names = split_names(keys, data, n_train_files)
    counts = _read_counts(len(rows), problems, int((names == MIXED_OUT).sum()))
    by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for row, name in zip(good, names):
        if name in by_split:
            by_split[name].append(row | {"order": int(order_key(row["file_index"], row["line"], row["copy"]))})
    if tokenizer is None:
        from rayft.models.loading import configured_tokenizer

        tokenizer = configured_tokenizer(config.model)
    label2id = None
    if config.model.head == "sequence_classification":  # every good row's label, as the Ray path finds them
        label2id = {label: index for index, label in enumerate(label_names((row["record"] for row in rows if not row["reason"]), data))}
    filtered: Counter[str] = Counter()
    facts: dict[str, SplitFacts] = {}
    for name, members in by_split.items():
        for row in members:
            row["features"] = row_features(row["record"], data, tokenizer, label2id)
        overlong = [row for row in members if row["features"]["drop_reason"].startswith("overlength")]
        if data.overlength == "error" and overlong:  # a run stops here too (see _fail_on_overlength)
            first = min(overlong, key=lambda row: (row["source"], row["line"]))
            raise _overlength_error(first["source"], first["line"], first["features"]["drop_reason"])
        facts[name] = SplitFacts()
        if members:
            facts[name].add(pd.DataFrame([row["features"] for row in members], columns=STAT_COLUMNS).assign(copy=0))
        _count_split(counts, filtered, name, facts[name])
    counts.filtered = dict(Counter(counts.filtered) + filtered)
    return SplitRows(by_split, counts, summarise_fingerprints(facts))


def _count_split(counts: DataCounts, filtered: Counter[str], name: str, facts: SplitFacts) -> None:
    """Add one tokenized split to the counts. Both drivers call this, so they agree. Input rows
    (copy 0) count as kept, filtered (by reason) or truncated; augmented copies only enter the
    split's size."""
    counts.splits[name] = facts.examples
    counts.kept += facts.kept
    counts.truncated[name] = facts.truncated
    filtered.update(facts.filtered)


def _check_all_usable(
    rows_from_train: int, rows: int, problems: list[dict[str, Any]], data: DataConfig, n_train_files: int, quarantine: Path
) -> None:
    """Stop on files with no rows, only bad rows or more than data.max_bad_fraction of them
    (`rows` read in all, `rows_from_train` of them from data.train)."""
    first = _first_problems(problems, n_train_files)
    bad_train = sum(1 for row in problems if row["file_index"] < n_train_files)
    _check_usable(rows_from_train, bad_train, first.get("data.train"), "data.train", data, quarantine)
    if data.validation:
        _check_usable(rows - rows_from_train, len(problems) - bad_train, first.get("data.validation"), "data.validation", data, quarantine)


# ---------------------------------------------------------------------------- Ray Data driver


@dataclass
class PreparedData:
    datasets: dict[str, ray.data.Dataset]
    """Tokenized splits that hold rows (train always), columns TRAINING_COLUMNS."""
    counts: DataCounts
    facts: DataFacts
    """What the report needs of each split that holds rows (see facts.py)."""
    labels: list[str] | None = None
    """The label set of a classification task (None otherwise), in id order; see label_set."""


def _read_file_batches(items: pd.DataFrame, data: DataConfig, rows_per_batch: int = 4096) -> Iterable[pd.DataFrame]:
    """Ray Data transform: stream one file's validated rows out in batches."""
    for item in items.to_dict("records"):
        batch: list[dict[str, Any]] = []
        for row in validated_rows(item, data):
            batch.append(row)
            if len(batch) == rows_per_batch:
                yield pd.DataFrame(batch, columns=ROW_COLUMNS)
                batch = []
        if batch:
            yield pd.DataFrame(batch, columns=ROW_COLUMNS)


def _take_split(batch: pd.DataFrame, orders_ref: ray.ObjectRef) -> pd.DataFrame:
    """Ray Data transform: the batch's rows whose order key is in this split's (sorted) keys."""
    orders = ray.get(orders_ref)
    keys = order_key(batch["file_index"], batch["line"], batch["copy"]).to_numpy()
    return batch[np.isin(keys, orders, assume_unique=True)]


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
        features = pd.DataFrame(
            [row_features(record, self.data, tokenizer, self.label2id) for record in batch["record"]], index=batch.index
        )
        order = order_key(batch["file_index"], batch["line"], batch["copy"])
        augmented = batch["augmented"] if "augmented" in batch.columns else ""
        return batch[["source", "line", "copy"]].assign(order=order, augmented=augmented, **{name: features[name] for name in features.columns})


def prepare_datasets(config: ExperimentConfig, tokenizer_path: str, run_dir: Path) -> PreparedData:
    """Read, validate, split and tokenize on Ray Data; write quarantine.jsonl and data_summary.json.
    Raises DataError on unusable data. Needs a running Ray."""
    data = config.data
    files, n_train_files = _sources(data)
    items = ray.data.from_items(files, override_num_blocks=len(files))
    validated = items.map_batches(_read_file_batches, fn_kwargs={"data": data}, batch_size=1, batch_format="pandas").materialize()
    total = validated.count()

    quarantine = run_dir / QUARANTINE_FILE
    bad = validated.filter(lambda row: row["reason"] != "")
    problems = _in_order(bad.select_columns(["source", "file_index", "line", "reason", "detail", "raw"]).take_all()) if total else []
    _write_quarantine(problems, quarantine)
    from_train = validated.filter(lambda row: row["file_index"] < n_train_files).count() if data.validation else total
    _check_all_usable(from_train, total, problems, data, n_train_files, quarantine)
    good = validated.filter(lambda row: row["reason"] == "")
    summary_ref, *order_refs = _assign_splits.remote(good, data, n_train_files)
    mixed_out, sizes = _resolved(summary_ref)
    counts = _read_counts(total, problems, mixed_out)

    head_labels = _head_labels(good, data) if config.model.head == "sequence_classification" else None
    label2id = None if head_labels is None else {label: index for index, label in enumerate(head_labels)}
    datasets: dict[str, ray.data.Dataset] = {}
    facts_refs: dict[str, ray.ObjectRef] = {}
    filtered: Counter[str] = Counter()
    for name, orders_ref in zip(SPLITS, order_refs):
        if not sizes[name]:
            counts.splits[name] = counts.truncated[name] = 0
            continue
        rows = good.map_batches(_take_split, fn_args=(orders_ref,), batch_format="pandas")
        if name == TRAIN and data.augment:
            # Materialized before Train starts: paraphrase actors need CPUs the workers will hold.
            rows = augment_train(rows.select_columns(AUGMENT_INPUT_COLUMNS), data, data.split.seed).materialize()
            counts.augmented = {op: c for op, c in augmentation_counts(rows, data, data.split.seed).items() if op != "original"}
        tokenized = rows.map_batches(_TokenizeBatch(tokenizer_path, data, label2id), batch_format="pandas").materialize()
        counted_ref, facts_refs[name] = _split_facts.remote(tokenized)
        counted: SplitFacts = _resolved(counted_ref)
        if data.overlength == "error" and counted.any_overlength:
            _fail_on_overlength(tokenized)
        _count_split(counts, filtered, name, counted)
        datasets[name] = _kept(tokenized)
    facts = _resolved(_summarise_fingerprints.remote(list(facts_refs), *facts_refs.values()))
    prepared = _finish(counts, filtered, datasets, facts, run_dir)
    prepared.labels = head_labels if head_labels is not None else label_set(prepared.facts, data)
    return prepared


def _resolved(ref: ray.ObjectRef) -> Any:
    """ray.get, raising a task's own error (a DataError with its message) rather than Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        raise err.cause from None


@ray.remote(num_returns=1 + len(SPLITS), num_cpus=0)
def _assign_splits(good: ray.data.Dataset, data: DataConfig, n_train_files: int) -> tuple[Any, ...]:
    """Ray task: the split of every good row, from its keys. Returns (rows left out by mixing,
    rows per split) and each split's sorted order keys, which stay in the object store for
    `_take_split`: the driver never holds a key per row."""
    keys = gather_keys(good, split_key_columns(data))
    names = split_names(keys, data, n_train_files)
    orders = order_key(keys["file_index"].to_numpy(np.int64), keys["line"].to_numpy(np.int64), 0)
    per_split = [np.sort(orders[names == name]) for name in SPLITS]
    summary = (int((names == MIXED_OUT).sum()), {name: len(split) for name, split in zip(SPLITS, per_split)})
    return (summary, *per_split)


@ray.remote(num_returns=2, num_cpus=0)
def _split_facts(tokenized: ray.data.Dataset) -> tuple[SplitFacts, SplitFacts]:
    """Ray task: a tokenized split's facts, without its fingerprints (for the driver's counts) and
    with them (left in the object store for _summarise_fingerprints)."""
    facts = SplitFacts()
    for batch in tokenized.select_columns(["copy", "augmented", *STAT_COLUMNS]).iter_batches(batch_format="pandas", batch_size=8192):
        facts.add(batch)
    return facts.without_fingerprints(), facts


@ray.remote(num_cpus=0)
def _summarise_fingerprints(names: list[str], *facts: SplitFacts) -> DataFacts:
    """Ray task: duplicates and train overlap from every split's fingerprints."""
    return summarise_fingerprints(dict(zip(names, facts)))


def _head_labels(good: ray.data.Dataset, data: DataConfig) -> list[str]:
    """A classification head's label set: every label in the data (all splits, so a label seen only
    in validation still gets an output), known before tokenizing because rows carry label ids."""
    found = good.map_batches(_labels_of, fn_kwargs={"data": data}, batch_format="pandas").unique("label")
    labels = sorted_labels(found)
    if len(labels) < 2:
        raise DataError(f"data.train: a classifier needs at least 2 labels in column {data.column('label')!r}, found {labels}")
    return labels


def _labels_of(batch: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    return pd.DataFrame({"label": [label_of(json.loads(record), data) for record in batch["record"]]})


def _in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row["file_index"], row["line"]))


def _fail_on_overlength(tokenized: ray.data.Dataset) -> None:
    """data.overlength is 'error': name the first over-long row by file and line."""
    overlong = tokenized.filter(lambda row: row["drop_reason"].startswith("overlength"))
    first = min(overlong.select_columns(["source", "line", "drop_reason"]).take_all(), key=lambda row: (row["source"], row["line"]))
    raise _overlength_error(first["source"], first["line"], first["drop_reason"])


def _overlength_error(source: str, line: int, drop_reason: str) -> DataError:
    return DataError(f"{source}:{line}: {drop_reason} (data.overlength is 'error'; raise data.max_length or choose drop/truncate)")


def _kept(tokenized: ray.data.Dataset) -> ray.data.Dataset:
    kept = tokenized.filter(lambda row: row["drop_reason"] == "").select_columns(TRAINING_COLUMNS).materialize()
    # Workers read these materialized blocks in milliseconds; a progress bar per read is noise.
    kept.context.enable_progress_bars = False
    return kept


def _finish(
    counts: DataCounts, filtered: Counter[str], datasets: dict[str, ray.data.Dataset], facts: DataFacts, run_dir: Path
) -> PreparedData:
    counts.filtered = dict(Counter(counts.filtered) + filtered)
    filtered_copies = facts.splits[TRAIN].filtered_copies if TRAIN in facts.splits else Counter()
    for op, op_counts in counts.augmented.items():
        op_counts["filtered"] = int(filtered_copies.get(op, 0))
    (run_dir / SUMMARY_FILE).write_text(json.dumps(asdict(counts), indent=2) + "\n")
    if counts.splits.get(TRAIN, 0) == 0:
        raise DataError(f"data.train: no training rows left after filtering ({counts.filtered}); see {run_dir / SUMMARY_FILE}")
    return PreparedData(datasets, counts, facts)


# ---------------------------------------------------------------------------- evaluation inputs


def label_set(facts: DataFacts, data: DataConfig) -> list[str] | None:
    """Sorted distinct labels of the training split's input rows (classification scored by a
    causal LM; None otherwise), from the facts of prepare_datasets, so training and `rayft eval`
    agree on it."""
    if data.format != "classification":
        return None
    return sorted(facts.splits[TRAIN].labels) if TRAIN in facts.splits else []


GENERAL_QUARANTINE_FILE = "general_quarantine.jsonl"


def general_data_config(config: ExperimentConfig) -> DataConfig | None:
    """eval.general read as its own format, with the task's max_length; long rows are truncated
    (a general set is there to be scored, not trained on)."""
    general = config.eval.general
    if general is None:
        return None
    return DataConfig(
        train=general.files, format=general.format, fields=general.fields, max_length=config.data.max_length,
        overlength="truncate", max_bad_fraction=config.data.max_bad_fraction,
    )


def read_general(config: ExperimentConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Validated rows of the forgetting monitor's general set (eval.general), read in-process
    (a held-out set small enough for the driver); bad rows go to general_quarantine.jsonl, and
    too many of them stop the run like bad training data."""
    data = general_data_config(config)
    if data is None:
        return []
    rows = [row for item in source_files(data.train, "eval.general.files") for row in validated_rows(item, data)]
    problems = [row for row in rows if row["reason"]]
    quarantine = run_dir / GENERAL_QUARANTINE_FILE
    _write_quarantine(problems, quarantine)
    _check_usable(len(rows), len(problems), problems[0] if problems else None, "eval.general.files", data, quarantine)
    return [row for row in rows if not row["reason"]]


def tokenize_rows(rows: list[dict[str, Any]], data: DataConfig, tokenizer_path: str) -> ray.data.Dataset:
    """Validated rows (ROW_COLUMNS) tokenized on Ray Data as training tokenizes a split; rows that
    cannot be used are left out. Needs a running Ray."""
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(8, len(rows) // 512)))
    return _kept(dataset.map_batches(_TokenizeBatch(tokenizer_path, data), batch_format="pandas").materialize())
