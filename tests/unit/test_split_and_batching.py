from __future__ import annotations

from collections import Counter

from rayft.config import SplitConfig
from rayft.data.batching import epoch_batches, micro_batches_per_epoch
from rayft.data.split import TEST, TRAIN, VAL, assign_splits


def test_splits_are_deterministic_disjoint_and_sized() -> None:
    split = SplitConfig(val=0.1, test=0.05, seed=3)
    labels = assign_splits(1000, split)
    assert labels == assign_splits(1000, split)
    assert Counter(labels) == {TRAIN: 850, VAL: 100, TEST: 50}
    assert assign_splits(1000, SplitConfig(val=0.1, test=0.05, seed=4)) != labels


def test_no_validation_carved_when_files_are_given() -> None:
    assert Counter(assign_splits(10, SplitConfig(val=0.5), carve_val=False)) == {TRAIN: 10}


def test_small_data_still_gets_one_validation_row() -> None:
    assert Counter(assign_splits(5, SplitConfig(val=0.1))) == {TRAIN: 4, VAL: 1}


def test_epoch_batches_cover_every_example_with_equal_counts_per_rank() -> None:
    n, batch, world = 10, 2, 3
    per_rank = [epoch_batches(n, batch, world, rank, seed=0, epoch=1) for rank in range(world)]
    assert [len(b) for b in per_rank] == [micro_batches_per_epoch(n, batch, world)] * world == [2, 2, 2]
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == 12 and set(seen) == set(range(n)), "padding wraps around; nothing is skipped"
    assert per_rank[0] == epoch_batches(n, batch, world, 0, seed=0, epoch=1)
    assert per_rank[0] != epoch_batches(n, batch, world, 0, seed=0, epoch=2)
