"""Which checkpoint gets evaluated: the best one of a run (launch._best) and what
`rayft eval --checkpoint best|last|PATH` resolves to (pure filesystem, no Ray, no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from rayft.config import UserInputError
from rayft.training.checkpoint import MARKER_FILE, MODEL_DIR, STATE_FILE, list_files, write_marker
from rayft.training.evaluation import RESULT_FILE, checkpoint_model_dir, resolve_checkpoint
from rayft.training.launch import _best


def _reported(*values: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(checkpoint, metrics) pairs as Ray's Result.best_checkpoints gives them, named c0, c1, ..."""
    return [(f"c{index}", metrics) for index, metrics in enumerate(values)]


def test_best_takes_the_lowest_in_min_mode_and_the_highest_in_max_mode() -> None:
    """Pins the direction of eval.mode when choosing the best checkpoint."""
    checkpoints = _reported(
        {"step": 4, "eval_loss": 2.0, "accuracy": 0.5},
        {"step": 8, "eval_loss": 1.5, "accuracy": 0.25},
        {"step": 12, "eval_loss": 1.75, "accuracy": 0.75},
    )
    assert _best(checkpoints, "eval_loss", "min") == checkpoints[1]
    assert _best(checkpoints, "accuracy", "max") == checkpoints[2]
    assert _best(checkpoints, "eval_loss", "max") == checkpoints[0]


def test_best_skips_checkpoints_without_the_metric_and_falls_back_to_the_last() -> None:
    """Pins that a checkpoint reported without metric_for_best (no validation at that step) is
    never chosen over a scored one, and that with none scored the last checkpoint is taken."""
    checkpoints = _reported({"step": 4}, {"step": 8, "eval_loss": 3.0}, {"step": 12, "eval_loss": "n/a"}, {"step": 16})
    assert _best(checkpoints, "eval_loss", "min") == checkpoints[1]
    assert _best(checkpoints, "eval_loss", "max") == checkpoints[1]
    unscored = _reported({"step": 4}, {"step": 8, "train_loss": 0.5})
    assert _best(unscored, "eval_loss", "min") == unscored[1]
    assert _best([], "eval_loss", "min") is None


def test_best_never_picks_a_nan_evaluation() -> None:
    """Pins the NaN case: Ray lists a diverged (NaN) checkpoint first as the worst, and min/max
    kept a NaN met first (every comparison with it is False), so it became the 'best'."""
    nan = math.nan
    checkpoints = _reported({"step": 4, "eval_loss": nan}, {"step": 8, "eval_loss": 2.0}, {"step": 12, "eval_loss": 1.0})
    assert _best(checkpoints, "eval_loss", "min") == checkpoints[2]
    assert _best(_reported({"accuracy": nan}, {"accuracy": 0.5}, {"accuracy": 0.25}), "accuracy", "max")[0] == "c1"
    assert _best(_reported({"eval_loss": nan}, {"eval_loss": nan}), "eval_loss", "min")[0] == "c1"  # none scored: the last


def _checkpoint(parent: Path, name: str, complete: bool = True) -> Path:
    """A checkpoint directory laid out as save_model/save_trainer_state/write_marker leave it."""
    directory = parent / name
    (directory / MODEL_DIR).mkdir(parents=True)
    (directory / MODEL_DIR / "model.safetensors").write_bytes(b"w" * 64)
    (directory / STATE_FILE).write_bytes(b"s" * 16)
    if complete:
        write_marker(directory, step=8, world_size=2, metrics={"eval_loss": 1.0}, files=list_files(directory))
    return directory


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run: two complete checkpoints and result.json naming the first best, the second last."""
    run = tmp_path / "runs" / "t"
    first, second = _checkpoint(run, "checkpoint_000000"), _checkpoint(run, "checkpoint_000001")
    (run / RESULT_FILE).write_text(json.dumps({"best_checkpoint": str(first), "last_checkpoint": str(second)}))
    return run


def test_best_and_last_come_from_result_json(run_dir: Path) -> None:
    """Pins that best/last are read from the run's result.json and resolve to the model/ folder."""
    assert resolve_checkpoint(run_dir, "best") == run_dir / "checkpoint_000000" / MODEL_DIR
    assert resolve_checkpoint(run_dir, "last") == run_dir / "checkpoint_000001" / MODEL_DIR


def test_an_explicit_path_may_name_the_checkpoint_or_its_model_folder(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the PATH forms: absolute, relative to the working directory, the checkpoint's own
    model/ folder, and a saved model directory (rayft export's output) taken as it is."""
    model_dir = run_dir / "checkpoint_000001" / MODEL_DIR
    assert resolve_checkpoint(run_dir, str(run_dir / "checkpoint_000001")) == model_dir
    assert resolve_checkpoint(run_dir, str(model_dir)) == model_dir
    monkeypatch.chdir(run_dir)
    assert resolve_checkpoint(run_dir, "checkpoint_000001") == model_dir
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "model.safetensors").write_bytes(b"w")
    assert resolve_checkpoint(run_dir, str(exported)) == exported


def test_an_incomplete_checkpoint_is_refused_naming_the_missing_marker(run_dir: Path) -> None:
    """Pins the atomic-checkpoint promise for `rayft eval`: no marker (a save that crashed midway)
    is an error naming the directory and the marker, whether given as the checkpoint or as its
    model/ folder (which alone looked like a saved model and slipped through)."""
    partial = _checkpoint(run_dir, "checkpoint_000002", complete=False)
    expected = f"--checkpoint: {partial} has no {MARKER_FILE}: the save did not finish"
    with pytest.raises(UserInputError) as caught:
        resolve_checkpoint(run_dir, str(partial))
    assert str(caught.value) == expected
    with pytest.raises(UserInputError) as caught:
        resolve_checkpoint(run_dir, str(partial / MODEL_DIR))
    assert str(caught.value) == expected


def test_a_checkpoint_whose_files_differ_from_its_marker_is_refused(run_dir: Path) -> None:
    """Pins that the marker's file sizes are checked: a truncated weight file is named."""
    checkpoint = run_dir / "checkpoint_000000"
    (checkpoint / MODEL_DIR / "model.safetensors").write_bytes(b"w" * 10)
    with pytest.raises(UserInputError) as caught:
        resolve_checkpoint(run_dir, "best")
    assert str(caught.value) == (
        f"--checkpoint: {checkpoint}: {MODEL_DIR}/model.safetensors is missing or incomplete (the marker lists 64 bytes)"
    )


def test_best_or_last_without_a_finished_run_names_what_is_missing(tmp_path: Path, run_dir: Path) -> None:
    """Pins the errors for a run without result.json, a result.json without that checkpoint,
    and a path that is no checkpoint at all."""
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir()
    with pytest.raises(UserInputError) as caught:
        resolve_checkpoint(unfinished, "last")
    assert str(caught.value) == (
        f"--checkpoint last: {unfinished} holds no finished run (no {RESULT_FILE}); train it first or give a checkpoint path"
    )
    (run_dir / RESULT_FILE).write_text(json.dumps({"best_checkpoint": None, "last_checkpoint": str(run_dir / "checkpoint_000001")}))
    with pytest.raises(UserInputError) as caught:
        resolve_checkpoint(run_dir, "best")
    assert str(caught.value) == f"--checkpoint best: {run_dir / RESULT_FILE} names no best checkpoint"
    with pytest.raises(UserInputError) as caught:
        checkpoint_model_dir(tmp_path / "nowhere")
    assert str(caught.value) == f"--checkpoint: {str(tmp_path / 'nowhere')!r} is not a rayft checkpoint (no {MODEL_DIR}/) nor a saved model directory"
