from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rayft.config import ConfigError, KFoldConfig, SplitConfig, config_from_dict
from rayft.data.batching import epoch_batches, micro_batches_per_epoch
from rayft.data.pipeline import QUARANTINE_FILE, read_splits
from rayft.data.split import TEST, TRAIN, VAL, assign_folds, assign_splits, parse_time
from tests.conftest import tiny_experiment, write_jsonl


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


def test_stratified_splits_keep_proportions() -> None:
    strata = ["a"] * 800 + ["b"] * 200
    labels = assign_splits(1000, SplitConfig(val=0.1, test=0.1, stratify_by="label"), strata=strata)
    by = Counter(zip(strata, labels))
    assert (by[("a", VAL)], by[("b", VAL)], by[("a", TEST)], by[("b", TEST)]) == (80, 20, 80, 20)


def test_time_split_puts_the_latest_rows_in_test_then_validation() -> None:
    times = [parse_time(f"2024-01-{day:02d}") for day in range(1, 21)]
    labels = assign_splits(20, SplitConfig(val=0.1, test=0.1, time_column="t"), times=times)
    assert labels[18:] == [TEST, TEST] and labels[16:18] == [VAL, VAL] and set(labels[:16]) == {TRAIN}
    assert parse_time(3) == 3.0 and parse_time("soon") is None and parse_time(True) is None


def test_kfold_folds_are_disjoint_cover_non_test_rows_and_keep_strata() -> None:
    strata = ["x", "y"] * 50
    labels = assign_splits(100, SplitConfig(val=0.0, test=0.1, seed=1), carve_val=False)
    folds = assign_folds(labels, KFoldConfig(k=5), seed=1, strata=strata)
    assert [f for f, label in zip(folds, labels) if label == TEST] == [-1] * 10, "test rows are in no fold"
    assert Counter(f for f in folds if f >= 0) == {0: 18, 1: 18, 2: 18, 3: 18, 4: 18}
    assert folds == assign_folds(labels, KFoldConfig(k=5), seed=1, strata=strata)


def test_kfold_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.kfold\.k: .*greater than or equal to 2"):
        config_from_dict(tiny_experiment(tmp_path), ["data.kfold.k=1"])
    with pytest.raises(ConfigError, match=r"^data\.kfold: fold must be below k \(3\)"):
        config_from_dict(tiny_experiment(tmp_path), ["data.kfold.k=3", "data.kfold.fold=3"])
    with pytest.raises(ConfigError, match=r"^data: kfold: the folds are the validation splits"):
        config_from_dict(tiny_experiment(tmp_path), ["data.kfold.k=3", "data.validation=v.jsonl"])


def test_read_splits_applies_the_chosen_fold_and_quarantines_rows_without_a_stratum(tmp_path: Path) -> None:
    rows = [{"instruction": "i", "output": str(n), "topic": "ab"[n % 2]} for n in range(40)] + [{"instruction": "i", "output": "o"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    seen_val: list[str] = []
    for fold in range(4):
        config = config_from_dict(tiny_experiment(tmp_path, data={
            "train": str(path), "max_bad_fraction": 0.1,
            "split": {"val": 0.0, "test": 0.0, "stratify_by": "topic"}, "kfold": {"k": 4, "fold": fold},
        }))
        result = read_splits(config, tmp_path / f"run{fold}")
        assert {k: len(v) for k, v in result.by_split.items()} == {"train": 30, "validation": 10, "test": 0}
        topics = Counter(json.loads(r["record"])["topic"] for r in result.by_split["validation"])
        assert topics == {"a": 5, "b": 5}
        seen_val += [json.loads(r["record"])["output"] for r in result.by_split["validation"]]
        quarantined = [json.loads(line) for line in (tmp_path / f"run{fold}" / QUARANTINE_FILE).read_text().splitlines()]
        assert [(q["line"], q["reason"]) for q in quarantined] == [(41, "missing_field")]
    assert sorted(seen_val, key=int) == [str(n) for n in range(40)], "every row is validation in exactly one fold"


def test_epoch_batches_cover_every_example_with_equal_counts_per_rank() -> None:
    n, batch, world = 10, 2, 3
    per_rank = [epoch_batches(n, batch, world, rank, seed=0, epoch=1) for rank in range(world)]
    assert [len(b) for b in per_rank] == [micro_batches_per_epoch(n, batch, world)] * world == [2, 2, 2]
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == 12 and set(seen) == set(range(n)), "padding wraps around; nothing is skipped"
    assert per_rank[0] == epoch_batches(n, batch, world, 0, seed=0, epoch=1)
    assert per_rank[0] != epoch_batches(n, batch, world, 0, seed=0, epoch=2)
