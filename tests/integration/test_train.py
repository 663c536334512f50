"""Fine-tunes on one shared local Ray instance (2 workers each): the slow tier, kept small."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from safetensors.torch import load_file

import rayft
from rayft.tracking.metrics_log import read_metrics
from rayft.training.loop import FAIL_AT_STEP_ENV
from tests.conftest import tiny_experiment

pytestmark = pytest.mark.ray


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}  # dropout: RNG matters on resume


def _lora_experiment(tmp_path: Path, name: str, **run: Any) -> dict[str, Any]:
    return tiny_experiment(
        tmp_path,
        name=name,
        model={"tiny": {"arch": "llama", "layers": 2, "hidden": 64, "heads": 4, "max_position": 128}},
        method=LORA,
        train={"max_steps": 240, "lr": 3e-3, "batch_size": 8, "logging_steps": 20, "eval_steps": 120, "save_steps": 120,
               "scheduler": "cosine", "warmup_ratio": 0.05},
        eval={"max_generate_examples": 32, "generate": {"max_new_tokens": 6}},
        run={"storage_path": str(tmp_path / "runs"), **run},
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One uninterrupted LoRA instruction-tuning run: checked for itself, and the reference the
    crashed run must reproduce."""
    tmp_path = tmp_path_factory.mktemp("lora")
    return tmp_path, rayft.train(_lora_experiment(tmp_path, "lora"))


def test_lora_instruction_tuning_improves_and_checkpoints_adapter_only(lora_run: tuple[Path, Any]) -> None:
    _, result = lora_run
    run_dir = Path(result.run_dir)

    assert (result.trainable_params, result.total_params) == (23_552, 204_096)
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"] - 2.0
    assert result.best_metrics["exact_match"] >= result.before["exact_match"] + 0.5
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["best_checkpoint"] == result.best_checkpoint and saved["data"]["splits"] == {"train": 1900, "validation": 100, "test": 0}
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "result.json", "loss.png", "quarantine.jsonl", "data_summary.json", "base_model"}

    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(20, 241, 20))
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 120, 240]
    assert all(r["tokens_per_s"] > 0 and r["lr"] >= 0 for r in records if "loss" in r)
    train_losses = [r["loss"] for r in records if "loss" in r]
    assert train_losses[-1] < 0.5 * train_losses[0], "the training loss goes down"
    assert len(result.checkpoints) == 2

    checkpoint = Path(result.best_checkpoint)
    model_files = {p.name for p in (checkpoint / "model").iterdir()}
    assert "adapter_model.safetensors" in model_files and "model.safetensors" not in model_files
    adapter = load_file(checkpoint / "model" / "adapter_model.safetensors")
    assert sum(t.numel() for t in adapter.values()) == 23_552
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run_dir / "base_model"), checkpoint / "model")
    assert peft_model.peft_config["default"].r == 8


def test_a_crashed_run_resumes_exactly(lora_run: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins exact resume: after a crash at step 130, the restarted run continues from the step-120
    checkpoint (one step into the second epoch: 1900 rows / (8 x 2 workers) = 119 steps each, so
    the second epoch's own shuffle is pinned too) and logs the same learning rates and losses as the uninterrupted run, step for step;
    run once more, the finished run reports its final metrics without training (a Train run with no
    report gave a resumed sweep trial no result, and Tune ended the sweep with an error)."""
    tmp_path, straight = lora_run
    monkeypatch.setenv(FAIL_AT_STEP_ENV, "130")
    resumed = rayft.train(_lora_experiment(tmp_path, "resumed", max_failures=1))

    expected = [r for r in read_metrics(Path(straight.run_dir) / "metrics.jsonl") if "loss" in r]
    got = [r for r in read_metrics(Path(resumed.run_dir) / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(20, 241, 20))
    for want, have in zip(expected, got):
        assert have["lr"] == want["lr"], f"step {want['step']}"
        assert have["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=1e-7), f"step {want['step']}"
    assert resumed.metrics["step"] == 240
    assert resumed.best_metrics["eval_loss"] == pytest.approx(straight.best_metrics["eval_loss"], rel=1e-6)

    # Run again on the finished run (as a sweep does for a trial whose driver died after its last
    # checkpoint): it resumes at the end, trains no further and reports the final metrics again.
    monkeypatch.delenv(FAIL_AT_STEP_ENV)
    again = rayft.train(_lora_experiment(tmp_path, "resumed", max_failures=1), resume=True)
    assert again.metrics["step"] == 240 and again.metrics["eval_loss"] == resumed.metrics["eval_loss"]
    assert [r for r in read_metrics(Path(resumed.run_dir) / "metrics.jsonl") if "loss" in r] == got


def test_full_fine_tuning_of_packed_sequences_trains_every_weight(tmp_path: Path) -> None:
    """Full fine-tuning on packed sequences: every weight trains, the packing efficiency is logged
    and reported, and the loss goes down."""
    config = tiny_experiment(
        tmp_path, name="full-packed", method={"type": "full"},
        data={"packing": True, "max_length": 202},  # examples are 62-67 tokens: exactly 3 fit
        train={"max_steps": 30, "lr": 1e-3, "logging_steps": 10, "eval_steps": 30, "save_steps": 30, "batch_size": 2},
    )
    result = rayft.train(config)
    assert result.trainable_params == result.total_params == 57_504  # 2*V*H + L*(4H^2 + 3*H*I + 2H) + H
    start = next(r for r in read_metrics(Path(result.run_dir) / "metrics.jsonl") if r["step"] == 0)
    report = json.loads((Path(result.run_dir) / "data_report.json").read_text())
    assert start["packed_sequences"] == report["packing"]["sequences"] == 634  # ceil(1900 / 3)
    assert start["packing_efficiency"] == report["packing"]["efficiency"] > 0.95
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"] - 0.5
    train_losses = list(_losses(Path(result.run_dir)).values())
    assert len(train_losses) == 3 and train_losses[-1] < train_losses[0], "the training loss goes down"
    weights = load_file(Path(result.best_checkpoint) / "model" / "model.safetensors")
    assert sum(t.numel() for t in weights.values()) == 57_504
    reloaded = AutoModelForCausalLM.from_pretrained(Path(result.best_checkpoint) / "model")
    base = AutoModelForCausalLM.from_pretrained(Path(result.run_dir) / "base_model")
    assert not torch.equal(reloaded.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
