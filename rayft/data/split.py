"""Deterministic, disjoint train / validation / test splits."""

from __future__ import annotations

import math

import numpy as np

from rayft.config import SplitConfig

TRAIN, VAL, TEST = "train", "validation", "test"


def assign_splits(n_rows: int, split: SplitConfig, carve_val: bool = True) -> list[str]:
    """The split of each row index: a seeded permutation cut into test, validation, train.

    The same (n_rows, split) always gives the same assignment, so evaluation can rebuild the
    test split later without storing it.
    """
    order = np.random.default_rng(split.seed).permutation(n_rows)
    n_test = math.floor(split.test * n_rows)
    n_val = math.floor(split.val * n_rows) if carve_val else 0
    if carve_val and split.val > 0 and n_val == 0 and n_rows - n_test > 1:
        n_val = 1
    labels = [TRAIN] * n_rows
    for position, row in enumerate(order):
        if position < n_test:
            labels[row] = TEST
        elif position < n_test + n_val:
            labels[row] = VAL
    return labels
