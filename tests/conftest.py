"""Shared fixtures: tiny configs and data that need no download."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rayft.training.loopback import keep_embedded_ray_on_loopback

keep_embedded_ray_on_loopback()  # before anything imports Ray: every test cluster stays on 127.0.0.1
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_DATA = REPO / "experiments" / "data" / "quickstart.jsonl"
ASSETS = Path(__file__).resolve().parent / "assets"


def tiny_experiment(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A small valid experiment dict; keyword sections are merged over the defaults
    (`method` is replaced whole: its keys depend on its type)."""
    config: dict[str, Any] = {
        "name": "t",
        "model": {"tiny": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "max_position": 128}},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": str(QUICKSTART_DATA), "max_length": 96, "split": {"val": 0.05, "test": 0.0, "seed": 0}},
        "train": {"max_steps": 8, "lr": 3e-3, "batch_size": 8, "logging_steps": 2, "eval_steps": 4, "save_steps": 4},
        "eval": {"max_generate_examples": 16, "generate": {"max_new_tokens": 6}},
        "scaling": {"num_workers": 2},
        "run": {"storage_path": str(tmp_path / "runs")},
    }
    for name, values in sections.items():
        if name != "method" and isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return config


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def byte_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()
