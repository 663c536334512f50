"""Deterministic, disjoint train / validation / test splits: random, stratified, by time, k-fold.

Every assignment is a pure function of the rows' split keys and the config, so the same data
and config always give the same splits, and evaluation can rebuild the test split later.
The test split is carved first and never enters training, validation or any fold.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from rayft.config import KFoldConfig, SplitConfig

TRAIN, VAL, TEST = "train", "validation", "test"
_NAMES = np.array([TRAIN, VAL, TEST], dtype=object)
_CODES = {name: code for code, name in enumerate(_NAMES)}


def parse_time(value: Any) -> float | None:
    """Numbers as they are; strings as ISO 8601 dates or times; None when neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            return None
    return None


def _cut(rows: Sequence[int] | np.ndarray, fraction: float, at_least_one: bool) -> int:
    count = math.floor(fraction * len(rows))
    return 1 if at_least_one and fraction > 0 and count == 0 and len(rows) > 1 else count


def _groups(n_rows: int, strata: Sequence[Hashable] | None) -> list[np.ndarray]:
    """Row positions per stratum (one group without strata), as index arrays: 8 bytes a row."""
    if strata is None:
        return [np.arange(n_rows)]
    by_value: dict[Hashable, list[int]] = defaultdict(list)
    for row, value in enumerate(strata):
        by_value[value].append(row)
    return [np.asarray(by_value[value], dtype=np.int64) for value in sorted(by_value, key=repr)]


def assign_splits(
    n_rows: int,
    split: SplitConfig,
    carve_val: bool = True,
    strata: Sequence[Hashable] | None = None,
    times: Sequence[float] | None = None,
) -> list[str]:
    """The split of each row: test first, then validation, the rest train.

    Random: a seeded permutation. Stratified: the same cut inside each stratum, so every split
    keeps the strata's proportions. By time: the latest rows are test, the next latest validation.
    """
    # One byte a row while assigning (this runs on every row of the data), names at the end.
    codes = np.zeros(n_rows, dtype=np.int8)
    if times is not None:
        # Latest first; among equal times the later row first (stable sort of the reversed rows).
        ordered = n_rows - 1 - np.argsort(-np.asarray(times, dtype=np.float64)[::-1], kind="stable")
        n_test = _cut(ordered, split.test, False)
        n_val = _cut(ordered, split.val, True) if carve_val else 0
        codes[ordered[:n_test]] = _CODES[TEST]
        codes[ordered[n_test : n_test + n_val]] = _CODES[VAL]
        return _NAMES[codes].tolist()
    rng = np.random.default_rng(split.seed)
    for group in _groups(n_rows, strata):
        order = group[rng.permutation(len(group))]
        n_test = _cut(order, split.test, strata is None)
        n_val = _cut(order, split.val, strata is None) if carve_val else 0
        codes[order[:n_test]] = _CODES[TEST]
        codes[order[n_test : n_test + n_val]] = _CODES[VAL]
    return _NAMES[codes].tolist()


def assign_folds(labels: Sequence[str], kfold: KFoldConfig, seed: int, strata: Sequence[Hashable] | None = None) -> list[int]:
    """The fold (0..k-1) of each non-test row, -1 for test rows; strata are dealt round-robin so
    every fold keeps their proportions."""
    folds = np.full(len(labels), -1, dtype=np.int64)
    candidates = np.flatnonzero(np.asarray(labels, dtype=object) != TEST)
    subset_strata = None if strata is None else [strata[row] for row in candidates]
    rng = np.random.default_rng([seed, kfold.k])
    position = 0
    for group in _groups(len(candidates), subset_strata):
        folds[candidates[group[rng.permutation(len(group))]]] = (position + np.arange(len(group))) % kfold.k
        position += len(group)
    return folds.tolist()
