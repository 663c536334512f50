"""Every task format trains end to end: tokenized on Ray Data, 2 workers, loss goes down."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import rayft
from rayft.config import DEFAULT_METRICS, METRICS, config_from_dict
from rayft.data.pipeline import read_splits
from tests.conftest import tiny_experiment, write_jsonl

pytestmark = pytest.mark.ray
WORDS = "red green blue cat dog sun moon tree rock star".split()


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


@pytest.mark.parametrize("task", ["qa", "classification", "summarization", "text", "chat"])
def test_format_trains_end_to_end(tmp_path: Path, task: str) -> None:
    data = write_jsonl(tmp_path / f"{task}.jsonl", _rows(task))
    # classification takes a stratified split (by label): 61 short and 99 long rows, 10% of each;
    # summarization a split by time: the latest 10% of the rows validate
    split = {"val": 0.1, "test": 0.0, "seed": 0}
    split |= {"classification": {"stratify_by": "label"}, "summarization": {"time_column": "day"}}.get(task, {})
    config = tiny_experiment(
        tmp_path, name=task,
        data={"train": str(data), "format": task, "max_length": 128, "split": split},
        train={"max_steps": 12, "lr": 5e-3, "logging_steps": 4, "eval_steps": 12, "save_steps": 12},
    )
    result = rayft.train(config)
    sizes = {"train": 145, "validation": 15, "test": 0} if task == "classification" else {"train": 144, "validation": 16, "test": 0}
    assert result.data["splits"] == sizes
    counts = result.data
    assert counts["read"] == counts["kept"] + sum(counts["quarantined"].values()) + sum(counts["filtered"].values())
    assert result.best_metrics["eval_loss"] < result.before["eval_loss"] - 0.5
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
        rows = read_splits(config_from_dict(config), tmp_path / "splits").by_split
        days = {name: [json.loads(row["record"])["day"] for row in rows[name]] for name in ("train", "validation")}
        assert len(days["validation"]) == 16 and min(days["validation"]) > max(days["train"])
