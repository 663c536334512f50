"""The main job, as a user runs it: `rayft train experiments/quickstart.yaml` on an embedded Ray,
then `rayft eval` on its best checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.ray


def test_quickstart_trains_with_two_workers_and_improves(tmp_path: Path) -> None:
    rayft = Path(sys.executable).with_name("rayft")
    done = subprocess.run(
        [str(rayft), "train", "experiments/quickstart.yaml", f"run.storage_path={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "quickstart-lora" / "result.json").read_text())
    before, after = result["before"], result["best_metrics"]
    assert after["eval_loss"] < before["eval_loss"] / 2
    assert after["exact_match"] >= before["exact_match"] + 0.5
    assert result["data"]["splits"] == {"train": 1700, "validation": 200, "test": 100}
    # the printed summary is the before/after table
    table = done.stdout[done.stdout.index("metric "):].splitlines()
    assert table[2].split()[0] == "eval_loss" and table[4].split()[0] == "exact_match"
    assert (tmp_path / "quickstart-lora" / "loss.png").stat().st_size > 10_000

    # the test split was scored once, by the best checkpoint, and is in the summary's test column
    run_dir = tmp_path / "quickstart-lora"
    assert result["test_metrics"] == json.loads((run_dir / "eval_test.json").read_text())["metrics"]
    assert table[0].split()[-1] == "test"

    # `rayft eval` on the best checkpoint reproduces the validation metrics recorded at training time
    evaluated = subprocess.run(
        [str(rayft), "eval", "experiments/quickstart.yaml", "--checkpoint", "best", f"run.storage_path={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    reproduced = json.loads((run_dir / "eval_validation.json").read_text())
    assert reproduced["model"] == result["best_checkpoint"] and reproduced["examples"] == 200
    assert reproduced["metrics"]["eval_loss"] == pytest.approx(after["eval_loss"], rel=1e-9)
    assert reproduced["metrics"]["perplexity"] == pytest.approx(after["perplexity"], rel=1e-9)
    assert reproduced["metrics"]["exact_match"] == after["exact_match"]
    assert "| exact_match |" in evaluated.stdout and "eval_validation.md" in evaluated.stdout
