"""Evaluation on a shared local Ray: early stopping ends a run at the right step on every rank,
the forgetting monitor and the test split are scored, and `rayft eval` scores a classification
base model with its confusion matrix and the labels outside the label set counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rayft
from rayft.config import config_from_dict
from rayft.tracking.metrics_log import read_metrics
from rayft.training.deepspeed_config import DEEPSPEED_CONFIG_FILE
from rayft.training.evaluation import evaluate
from tests.conftest import tiny_experiment, write_jsonl
from tests.integration.method_specs import METHODS

pytestmark = pytest.mark.ray


def test_early_stopping_ends_the_run_at_the_right_step_and_the_test_split_is_scored(tmp_path: Path) -> None:
    """eval every 2 steps; min_delta 100 makes every evaluation after the first a non-improvement,
    so with patience 2 the run must stop at step 6 (evaluations at 2: best, 4: 1 bad, 6: 2 bad).
    The run is prompt tuning under DeepSpeed ZeRO-0, the stage and method test_deepspeed.py leaves
    to it: every rank stops together inside DeepSpeed, and the prompt's loss goes down."""
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": f"The river {i} runs to the sea past the old mill."} for i in range(24)])
    method, lr, method_file = METHODS["prompt"]
    config = tiny_experiment(
        tmp_path, name="stops", method=method,
        data={"split": {"val": 0.02, "test": 0.01, "seed": 0}},
        train={"max_steps": 40, "lr": lr, "logging_steps": 2, "eval_steps": 2, "save_steps": 4,
               "backend": "deepspeed", "deepspeed": {"stage": 0},
               "early_stopping": {"metric": "eval_loss", "mode": "min", "patience": 2, "min_delta": 100.0}},
        eval={"general": str(general), "max_generate_examples": 8, "generate": {"max_new_tokens": 4}},
    )
    result = rayft.train(config)
    run_dir = Path(result.run_dir)

    assert (result.stop_reason, result.stopped_at_step) == ("early_stopping", 6)
    assert result.early_stopping is not None
    assert (result.early_stopping["best_step"], result.early_stopping["stopped_step"], result.early_stopping["bad_evaluations"]) == (2, 6, 2)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert max(r["step"] for r in records) == 6, "nothing ran past the stop"
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 2, 4, 6]
    assert records[-1]["stop_reason"] == "early_stopping"
    assert [c["step"] for c in result.checkpoints] == [4, 6], "the state training stopped in is checkpointed"
    assert result.best_step in {4, 6} and result.best_metrics["step"] == result.best_step
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and losses[-1] < losses[0], f"prompt tuning under DeepSpeed: {losses}"
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"]
    assert json.loads((run_dir / DEEPSPEED_CONFIG_FILE).read_text())["zero_optimization"]["stage"] == 0
    assert 0 < result.trainable_params < result.total_params
    assert (Path(result.best_checkpoint) / "model" / method_file).is_file()

    # forgetting monitor: the general set is scored at every evaluation, before training too
    assert all("general_eval_loss" in r and "general_perplexity" in r for r in records if "eval_loss" in r)
    assert "general_eval_loss" in result.before and "general_eval_loss" in result.best_metrics

    # the test split (20 rows) is scored once, by the best checkpoint
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["stop_reason"] == "early_stopping" and saved["stopped_at_step"] == 6 and saved["best_step"] == result.best_step
    assert saved["data"]["splits"]["test"] == 20
    test_report = json.loads((run_dir / "eval_test.json").read_text())
    assert test_report["examples"] == 20 and test_report["model"] == result.best_checkpoint
    assert saved["test_metrics"] == test_report["metrics"]
    assert {"eval_loss", "perplexity", "exact_match", "rougeL", "general_eval_loss"} <= set(saved["test_metrics"])
    assert (run_dir / "eval_test.md").read_text().startswith("# Evaluation on the test split")


def test_rayft_eval_scores_a_classification_base_model_with_its_confusion_matrix(tmp_path: Path) -> None:
    """Labels are scored within the training label set; the validation row labelled 'medium'
    (not a training label) counts as wrong and is reported, not a crash."""
    words = ["cat", "dog", "sun", "tree", "river", "mountain", "ant", "elephant"]
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"a {w} {i}", "label": "short" if len(w) <= 3 else "long"} for i, w in enumerate(words * 4)])
    validation = write_jsonl(tmp_path / "val.jsonl", [
        {"text": "a cow", "label": "short"}, {"text": "a giraffe", "label": "long"}, {"text": "a horse", "label": "medium"},
    ])
    raw = tiny_experiment(tmp_path, name="cls", data={"train": str(train), "validation": str(validation), "format": "classification"})
    report = evaluate(config_from_dict(raw), checkpoint=None, split="validation")

    run_dir = tmp_path / "runs" / "cls"
    assert report.model == "base" and report.examples == 3
    assert report.metrics["answered"] == 3 and report.metrics["unknown_references"] == 1
    assert report.metrics["invalid_predictions"] == 0, "constrained to the label set"
    assert report.metrics["accuracy"] in {0.0, 1 / 3, 2 / 3}
    assert report.confusion is not None and report.confusion["labels"] == ["long", "short", "<unknown label>"]
    assert sum(map(sum, report.confusion["matrix"])) == 3 and sum(report.confusion["matrix"][2]) == 1
    assert {p.name for p in run_dir.glob("eval_*")} == {"eval_validation_base.json", "eval_validation_base.md", "eval_validation_base_confusion.png"}
    assert "## Confusion matrix" in (run_dir / "eval_validation_base.md").read_text()
