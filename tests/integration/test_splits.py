"""Every split strategy trains end to end: k-fold (stratified) and time-based."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rayft
from rayft.training.launch import KFoldResult, TrainResult
from tests.conftest import tiny_experiment, write_jsonl

pytestmark = pytest.mark.ray
FAST = {"max_steps": 6, "lr": 5e-3, "logging_steps": 3, "eval_steps": 6, "save_steps": 6}
NO_TEST_EVAL = {"test_at_end": False}  # these tests are about splits; the test-split evaluation is tested elsewhere


def _rows(count: int) -> list[dict]:
    return [
        {"instruction": "Is the number even or odd?", "input": str(n), "output": "odd" if n % 2 else "even",
         "parity": n % 2, "day": f"2024-03-{1 + n % 28:02d}T{n % 24:02d}:00:00"}
        for n in range(count)
    ]


def test_kfold_trains_every_fold_and_reports_mean_and_std(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _rows(90))
    config = tiny_experiment(tmp_path, name="cv", train=FAST, eval=NO_TEST_EVAL, data={
        "train": str(data), "split": {"val": 0.0, "test": 0.1, "stratify_by": "parity"}, "kfold": {"k": 3},
    })
    result = rayft.train(config)
    assert isinstance(result, KFoldResult) and len(result.folds) == 3
    assert [Path(f.run_dir).name for f in result.folds] == ["cv-fold0", "cv-fold1", "cv-fold2"]
    # stratified test: floor(10% of 45) per parity = 8 rows; the other 82 dealt into folds of 28, 27, 27
    assert [f.data["splits"] for f in result.folds] == [
        {"train": 54, "validation": 28, "test": 8}, {"train": 55, "validation": 27, "test": 8}, {"train": 55, "validation": 27, "test": 8},
    ]
    losses = [f.best_metrics["eval_loss"] for f in result.folds]
    assert result.mean["eval_loss"] == pytest.approx(sum(losses) / 3)
    assert result.std["eval_loss"] > 0
    saved = json.loads(Path(result.summary_path).read_text())
    assert saved["mean"]["eval_loss"] == pytest.approx(result.mean["eval_loss"])


def test_time_split_trains_on_the_past_and_validates_on_the_latest(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _rows(100))
    config = tiny_experiment(tmp_path, name="by-time", train=FAST, eval=NO_TEST_EVAL, data={
        "train": str(data), "split": {"val": 0.2, "test": 0.1, "time_column": "day"},
    })
    result = rayft.train(config)
    assert isinstance(result, TrainResult)
    assert result.data["splits"] == {"train": 70, "validation": 20, "test": 10}
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"]
