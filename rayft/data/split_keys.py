"""Which split each good row belongs to, from its keys alone.

The keys are small per row (file, line; mixing entry, stratum and time only when the config uses
them); `gather_keys` collects them in compact columns, and `split_names` turns them into split
names with the pure functions of split.py plus weighted mixing. prepare_datasets runs this in a
Ray task, read_splits in-process: the same rows get the same splits either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import ray.data
from pandas.api.types import union_categoricals

from rayft.config import DataConfig
from rayft.data.readers import DataError
from rayft.data.split import TEST, TRAIN, VAL, assign_folds, assign_splits

MIXED_OUT = "mixed_out"


def split_key_columns(data: DataConfig) -> list[str]:
    """The columns assign_split_names reads under this config: file and line always, the mixing
    entry, stratum and time only when the config mixes, stratifies or splits by time."""
    split = data.split
    return ["file_index", "line", *(["entry"] if data.weights else []), *(["stratum"] if split.stratify_by else []),
            *(["time"] if split.time_column else [])]


def split_names(keys: pd.DataFrame, data: DataConfig, n_train_files: int) -> np.ndarray:
    """The split of every good row (aligned with `keys`): data.validation rows are validation."""
    from_train = (keys["file_index"] < n_train_files).to_numpy()
    names = np.empty(len(keys), dtype=object)
    names.fill(VAL)  # np.full would build a fixed-width string array of the fill first: 80 bytes a row
    names[from_train] = assign_split_names(keys[from_train], data, carve_val=not data.validation)
    return names


def assign_split_names(keys: pd.DataFrame, data: DataConfig, carve_val: bool) -> np.ndarray:
    """The split of every good data.train row (an array aligned with `keys`), from its keys alone
    (file_index, line; entry, stratum and time where the config uses them). Keys are taken in
    (file, line) order, so the result does not depend on the order Ray produced them in. Rows
    left out by weighted mixing get MIXED_OUT."""
    in_order = np.lexsort((keys["line"].to_numpy(), keys["file_index"].to_numpy()))
    split = data.split
    strata = keys["stratum"].to_numpy()[in_order].tolist() if split.stratify_by else None
    times = keys["time"].to_numpy()[in_order].tolist() if split.time_column else None
    labels = assign_splits(len(keys), split, carve_val=carve_val and data.kfold is None, strata=strata, times=times)
    if data.kfold is not None:
        if data.kfold.fold is None:
            raise ValueError("data.kfold.fold must be chosen before splitting (rayft.train runs every fold)")
        folds = assign_folds(labels, data.kfold, split.seed, strata)
        labels = [TEST if label == TEST else VAL if fold == data.kfold.fold else TRAIN for label, fold in zip(labels, folds)]
    ordered = np.asarray(labels, dtype=object)
    if data.weights is not None:
        train_positions = np.flatnonzero(ordered == TRAIN)
        keep = mixed_keep(keys["entry"].to_numpy()[in_order][train_positions].tolist(), data.weights, split.seed)
        ordered[np.setdiff1d(train_positions, train_positions[keep])] = MIXED_OUT
    names = np.empty(len(keys), dtype=object)
    names[in_order] = ordered
    return names


def mixed_keep(entries: list[int], weights: list[float], seed: int) -> list[int]:
    """Positions to keep so that the entries stand in the given proportions without repeating a
    row: total = min(rows of entry i / share i); each entry keeps a seeded sample."""
    shares = [w / sum(weights) for w in weights]
    by_entry: dict[int, list[int]] = {i: [] for i in range(len(weights))}
    for position, entry in enumerate(entries):
        by_entry[entry].append(position)
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
    return sorted(keep)


_KEY_DTYPES = {"file_index": np.int32, "line": np.int64, "entry": np.int16, "time": np.float64}


def gather_keys(good: ray.data.Dataset, columns: list[str]) -> pd.DataFrame:
    """The good rows' split keys, column by column in compact types (a stratum as a categorical)."""
    parts: dict[str, list[Any]] = {column: [] for column in columns}
    for batch in good.select_columns(columns).iter_batches(batch_format="pandas", batch_size=8192):
        for column in columns:
            values = batch[column]
            parts[column].append(pd.Categorical(values) if column == "stratum" else values.to_numpy(_KEY_DTYPES[column]))
    return pd.DataFrame({
        column: (union_categoricals(chunks) if column == "stratum" else np.concatenate(chunks)) if chunks
        else np.zeros(0, _KEY_DTYPES.get(column, object))
        for column, chunks in parts.items()
    })
