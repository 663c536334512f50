"""k-fold cross-validation (with a stratified test cut) trains end to end through the CLI; the
random, stratified and time-based train/validation splits train in test_formats.py."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from rayft.cli import main
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


def test_kfold_trains_every_fold_and_reports_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rayft train CONFIG data.kfold.k=2`, as a user runs it: every fold trains, the table of
    folds with mean ± std is printed and written."""
    data = write_jsonl(tmp_path / "d.jsonl", _rows(90))
    config = tiny_experiment(tmp_path, name="cv", train=FAST, eval=NO_TEST_EVAL, data={
        "train": str(data), "split": {"val": 0.0, "test": 0.1, "stratify_by": "parity"},
    })
    (tmp_path / "cv.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "cv.yaml"), "data.kfold.k=2"]) == 0
    summary = json.loads((tmp_path / "runs" / "cv-kfold.json").read_text())
    folds = summary["folds"]
    assert [Path(f["run_dir"]).name for f in folds] == ["cv-fold0", "cv-fold1"]
    # stratified test: floor(10% of 45) per parity = 8 rows; the other 82 dealt into folds of 41 each
    assert [f["data"]["splits"] for f in folds] == [{"train": 41, "validation": 41, "test": 8}] * 2
    losses = [f["best_metrics"]["eval_loss"] for f in folds]
    assert summary["mean"]["eval_loss"] == pytest.approx(sum(losses) / 2)
    assert summary["std"]["eval_loss"] == pytest.approx(statistics.stdev(losses)) and summary["std"]["eval_loss"] > 0
    printed = capsys.readouterr().out
    assert "2-fold cross-validation" in printed
    assert f"mean ± std | {summary['mean']['eval_loss']:.4f} ± {summary['std']['eval_loss']:.4f}" in printed
