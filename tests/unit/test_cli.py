"""The CLI's fail-fast contract: user errors exit 2 with one line naming the thing, before Ray starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from rayft.cli import main
from tests.conftest import REPO, tiny_experiment, write_jsonl


def _write_config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(tmp_path, **sections)))
    return path


def test_train_with_a_bad_value_exits_2_naming_the_key() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rayft.cli", "train", "experiments/quickstart.yaml", "train.lr=abc"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rayft: error: train.lr: Input should be a valid number, unable to parse string as a number (got 'abc')"
    ]
    assert "Traceback" not in done.stderr


def test_validate_prints_the_resolved_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_write_config(tmp_path)), "method.r=16"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["method"]["r"] == 16
    assert resolved["train"]["scheduler"] == "linear", "defaults are filled in"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"data": {"train": "/nonexistent/*.jsonl"}}, "data.train: no file matches '/nonexistent/*.jsonl'"),
        ({"model": {"name_or_path": "/nonexistent-model", "tiny": None}}, "model.name_or_path: cannot load '/nonexistent-model'"),
    ],
)
def test_train_user_errors_exit_2_before_ray(tmp_path: Path, capsys, sections, message) -> None:
    assert main(["train", str(_write_config(tmp_path, **sections))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not ray.is_initialized(), "no Ray work before the inputs are known to be good"


def test_empty_dataset_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert main(["train", str(_write_config(tmp_path, data={"train": str(tmp_path / "empty.jsonl")}))]) == 2
    assert "data.train: the files hold no rows" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_finished_run_is_not_overwritten_silently(tmp_path: Path, capsys) -> None:
    config = _write_config(tmp_path, data={"train": str(write_jsonl(tmp_path / "d.jsonl", [{"instruction": "i", "output": "o"}]))})
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text("{}")
    assert main(["train", str(config)]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (run_dir / "result.json").read_text() == "{}"


def test_data_preview_marks_the_trained_part(tmp_path: Path, capsys) -> None:
    rows = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Add", "input": "1 2", "output": "3"}]
    config = _write_config(tmp_path, data={"train": str(write_jsonl(tmp_path / "d.jsonl", rows)), "split": {"val": 0.0}})
    assert main(["data", "preview", str(config), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.split("\n\n") == [
        f"--- {tmp_path / 'd.jsonl'}:1  33 tokens, 4 trained\nInstruction: Say hi\nResponse:[[ hi</s>]]",
        f"--- {tmp_path / 'd.jsonl'}:2  40 tokens, 3 trained\nInstruction: Add\nInput: 1 2\nResponse:[[ 3</s>]]\n",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "best"], "--checkpoint best: {run} holds no finished run (no result.json)"),
        (["--checkpoint", "{tmp}/nowhere"], "--checkpoint: '{tmp}/nowhere' is not a rayft checkpoint"),
        (["--base", "--split", "test"], "--split test: the config gives this run no test rows (data.split.test)"),
    ],
)
def test_eval_user_errors_exit_2_before_ray(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    config = _write_config(tmp_path)
    filled = [a.format(tmp=tmp_path) for a in args]
    assert main(["eval", str(config), *filled]) == 2
    err = capsys.readouterr().err
    assert message.format(run=tmp_path / "runs" / "t", tmp=tmp_path) in err and len(err.strip().splitlines()) == 1
    assert not ray.is_initialized()


def test_eval_with_an_unknown_metric_lists_the_valid_names(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(_write_config(tmp_path)), "--base", "eval.metrics=[bleu, meteor]"]) == 2
    assert "eval.metrics: unknown metric 'meteor'; valid metrics: perplexity, exact_match, f1, bleu, chrf, rouge" in capsys.readouterr().err
