"""Every task format trains end to end (tokenized on Ray Data, 2 workers, loss goes down), each
with another PEFT method on the torch engine, so one fit covers a format and a method: every
method trains and its loss goes down. LoRA (instruction format) and full fine-tuning are in
test_train.py; every method under DeepSpeed in test_deepspeed.py."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import rayft
from rayft.cli import main
from rayft.config import DEFAULT_METRICS, METRICS, config_from_dict
from rayft.data.pipeline import read_splits
from rayft.tracking.metrics_log import read_metrics
from tests.conftest import tiny_experiment, write_jsonl
from tests.integration.method_specs import METHODS

pytestmark = pytest.mark.ray
WORDS = "red green blue cat dog sun moon tree rock star".split()
FORMAT_METHOD = {"qa": "prefix", "classification": "lora-dora", "summarization": "adapter", "text": "ia3", "chat": "prompt"}
STEPS = 24


def _rows(task: str, count: int = 160) -> list[dict[str, Any]]:
    rng = random.Random(0)
    rows = []
    for _ in range(count):
        word = rng.choice(WORDS)
        if task == "qa":
            rows.append({"question": f"Which word? {word}", "context": f"The word is {word}.", "answer": word})
        elif task == "classification":
            rows.append({"text": f"a {word} thing", "label": "short" if len(word) <= 3 else "long"})
        elif task == "summarization":
            day = f"2024-03-{1 + len(rows) % 28:02d}T{len(rows) % 24:02d}:00:00"
            rows.append({"document": f"{word} {word} {word} and more {word}", "summary": word, "day": day})
        elif task == "text":
            rows.append({"text": f"the {word} is a {word} and the {word} stays {word}"})
        else:
            rows.append({"messages": [{"role": "user", "content": f"Say {word}"}, {"role": "assistant", "content": word}]})
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Finished runs by format, trained on first use (the export test reuses the DoRA run)."""
    return {"_dir": tmp_path_factory.mktemp("formats")}


def _trained(runs: dict[str, Any], task: str) -> tuple[Any, dict[str, Any]]:
    if task not in runs:
        tmp_path = runs["_dir"] / task
        tmp_path.mkdir()
        data = write_jsonl(tmp_path / f"{task}.jsonl", _rows(task))
        # classification takes a stratified split (by label): 61 short and 99 long rows, 10% of each;
        # summarization a split by time: the latest 10% of the rows validate
        split = {"val": 0.1, "test": 0.0, "seed": 0}
        split |= {"classification": {"stratify_by": "label"}, "summarization": {"time_column": "day"}}.get(task, {})
        method, lr, _ = METHODS[FORMAT_METHOD[task]]
        config = tiny_experiment(
            tmp_path, name=task, method=method,
            data={"train": str(data), "format": task, "max_length": 128, "split": split},
            train={"max_steps": STEPS, "lr": lr, "logging_steps": 4, "eval_steps": STEPS, "save_steps": STEPS},
            eval={"max_generate_examples": 8, "generate": {"max_new_tokens": 4}},
        )
        runs[task] = (rayft.train(config), config)
    return runs[task]


@pytest.mark.parametrize("task", list(FORMAT_METHOD))
def test_format_trains_end_to_end_with_its_method(runs: dict[str, Any], task: str) -> None:
    result, config = _trained(runs, task)
    name = FORMAT_METHOD[task]
    run_dir = Path(result.run_dir)
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert len(losses) == STEPS // 4
    assert losses[-1] < 0.8 * losses[0], f"{name}: training loss {losses}"
    saved = json.loads((run_dir / "result.json").read_text())
    assert 0 < saved["trainable_params"] == result.trainable_params < result.total_params
    assert (Path(result.best_checkpoint) / "model" / METHODS[name][2]).is_file()
    sizes = {"train": 145, "validation": 15, "test": 0} if task == "classification" else {"train": 144, "validation": 16, "test": 0}
    assert result.data["splits"] == sizes
    counts = result.data
    assert counts["read"] == counts["kept"] + sum(counts["quarantined"].values()) + sum(counts["filtered"].values())
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"]
    defaults = [key for name in DEFAULT_METRICS[task] for key in METRICS[name].keys]
    assert set(defaults) <= set(result.best_metrics), "each format reports its default metrics"
    assert ("answered" in result.best_metrics) == (task != "text"), "text has no single answer to match"
    report = json.loads((Path(result.run_dir) / "data_report.json").read_text())
    if task == "classification":
        assert report["splits"]["train"]["labels"] == {"short": 55, "long": 90}  # floor(6.1) and floor(9.9) validate
        assert report["splits"]["validation"]["labels"] == {"short": 6, "long": 9}
        # labels are scored within the label set: no prediction falls outside it
        assert result.best_metrics["invalid_predictions"] == 0 and 0 <= result.best_metrics["accuracy"] <= 1
    if task == "summarization":  # the split by time, as the pipeline made it: validation holds the latest rows
        rows = read_splits(config_from_dict(config), run_dir.parent / "splits").by_split
        days = {name: [json.loads(row["record"])["day"] for row in rows[name]] for name in ("train", "validation")}
        assert len(days["validation"]) == 16 and min(days["validation"]) > max(days["train"])


def test_finished_run_exports_merged_with_its_metrics(runs: dict[str, Any], tmp_path: Path) -> None:
    result, _ = _trained(runs, "classification")  # DoRA: merged into the base weights
    out = tmp_path / "export"
    assert main(["export", result.best_checkpoint, str(out), "--merge"]) == 0
    card = (out / "README.md").read_text()
    assert f"| eval_loss | {result.before['eval_loss']:.4f} | {result.best_metrics['eval_loss']:.4f} |" in card
    assert f"- trainable parameters: {result.trainable_params:,} of {result.total_params:,}" in card
    assert "examples per split: {'train': 145, 'validation': 15, 'test': 0}" in card
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == result.total_params - result.trainable_params
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert isinstance(model.lm_head.weight, torch.Tensor)
