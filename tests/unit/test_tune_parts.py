"""Sweep parts without Ray: search-space validation and sampling, failure reasons, budgets,
and the report built from a trial table."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from rayft.config import BudgetSection, ConfigError, config_from_dict, with_params
from rayft.tune.budget import BUDGET_MARKER, BudgetStopper
from rayft.tune.report import BUDGET, COMPLETED, EARLY_STOPPED, PLOTS, TrialRow, as_study, failure_reason, render_markdown, write_plots
from rayft.tune.space import OptunaSpace, tune_space
from tests.conftest import tiny_experiment

SPACE = {
    "train.lr": {"loguniform": [1e-4, 1e-2]},
    "method.r": {"choice": [2, 4], "when": {"method.type": "lora"}},
    "method.type": {"choice": ["lora", "full"]},
    "train.batch_size": {"int": [2, 8]},
}


def _config(tmp_path: Path, space: dict, **tune: object):
    return config_from_dict({**tiny_experiment(tmp_path), "tune": {"space": space, **tune}})


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lr": {"loguniform": [0, 1e-2]}}, "tune.space.train.lr: loguniform bounds must be positive"),
        ({"train.lr": {"uniform": [0.1, 0.01]}}, "tune.space.train.lr: uniform bounds must be ordered"),
        ({"train.batch_size": {"choice": []}}, "tune.space.train.batch_size: choice needs at least one value"),
        ({"train.lr": {"uniform": [0.1, 0.2], "choice": [1]}}, "give exactly one of"),
        ({"train.lrr": {"choice": [0.1]}}, r"tune.space.train.lrr: value 0.1 does not fit the config \(unknown key\)"),
        ({"method.r": {"int": [0, 4]}}, "tune.space.method.r: value 0 does not fit the config"),
        ({"data.max_length": {"choice": [64]}}, "cannot be searched"),
        ({}, "tune.space: search at least one key"),
    ],
)
def test_invalid_spaces_name_the_key(tmp_path: Path, space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, space)


def test_optuna_space_suggests_conditional_keys_only_when_their_condition_holds(tmp_path: Path) -> None:
    config = _config(tmp_path, SPACE)
    define = OptunaSpace(config.tune, config.model_dump(mode="json", exclude={"tune"}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(12):
        trial = study.ask()
        define(trial)
        seen.append(trial.params)
        study.tell(trial, 0.0)
    assert {p["method.type"] for p in seen} == {"lora", "full"}
    assert all(("method.r" in p) == (p["method.type"] == "lora") for p in seen)
    assert all(1e-4 <= p["train.lr"] <= 1e-2 and 2 <= p["train.batch_size"] <= 8 for p in seen)
    # Every sampled set makes a valid experiment.
    for params in seen:
        trial = config_from_dict(with_params(config.model_dump(mode="json", exclude={"tune"}), params))
        assert trial.method.type == params["method.type"] and getattr(trial.method, "r", None) == params.get("method.r")


def test_grid_search_takes_only_grid_and_choice_values(tmp_path: Path) -> None:
    config = _config(tmp_path, {"train.lr": {"grid": [0.1, 0.01]}, "method.r": {"choice": [2, 4]}}, search="grid")
    space = tune_space(config.tune, {})
    assert space["train.lr"] == {"grid_search": [0.1, 0.01]} and space["method.r"] == {"grid_search": [2, 4]}
    bad = _config(tmp_path, {"train.lr": {"uniform": [0.1, 0.2]}}, search="grid")
    with pytest.raises(ConfigError, match="tune.space.train.lr: grid search needs grid or choice values"):
        tune_space(bad.tune, {})


def test_failure_reasons_tell_nan_and_oom_apart() -> None:
    assert failure_reason("Worker raised NonFiniteLoss: non-finite loss: training loss is nan") == "failed: NaN/inf loss"
    assert failure_reason("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate") == "failed: out of memory"
    assert failure_reason("RuntimeError: boom\nValueError: last line") == "failed: ValueError: last line"


def test_budget_stopper_fires_on_worker_hours_and_records_when(tmp_path: Path) -> None:
    stopper = BudgetStopper(BudgetSection(worker_hours=0.01), num_workers=2, sweep_dir=tmp_path)
    assert stopper("a", {"time_total_s": 9.0}) is False and not stopper.stop_all()  # 0.005 worker-hours
    stopper("b", {"time_total_s": 9.0})
    assert stopper.stop_all()  # 0.010
    fired = BudgetStopper.fired_at(tmp_path)
    assert fired is not None and "worker-hours" in fired["reason"] and (tmp_path / BUDGET_MARKER).is_file()
    wall = BudgetStopper(BudgetSection(wall_time_s=0.01), num_workers=1, sweep_dir=tmp_path / "w")
    (tmp_path / "w").mkdir()
    time.sleep(0.02)
    assert wall.stop_all() and "wall time" in BudgetStopper.fired_at(tmp_path / "w")["reason"]


def _rows() -> list[TrialRow]:
    return [
        TrialRow("t1", "TERMINATED", COMPLETED, {"train.lr": 1e-3, "method.r": 4, "method.type": "lora", "train.batch_size": 4}, 1.5, 12, 5, 30.0, 0.0167, "/c1"),
        TrialRow("t2", "TERMINATED", EARLY_STOPPED, {"train.lr": 1e-4, "method.type": "full", "train.batch_size": 8}, 3.0, 3, 2, 10.0, 0.0056, None),
        TrialRow("t3", "ERROR", "failed: NaN/inf loss", {"train.lr": 1e-2, "method.r": 2, "method.type": "lora", "train.batch_size": 2}, None, 1, 0, 5.0, 0.0028, None),
        TrialRow("t4", "TERMINATED", BUDGET, {"train.lr": 5e-4, "method.r": 2, "method.type": "lora", "train.batch_size": 6}, 2.0, 6, 3, 20.0, 0.011, "/c4"),
    ]


def test_report_study_plots_and_table_from_a_trial_table(tmp_path: Path) -> None:
    config = _config(tmp_path, SPACE)
    study = as_study(_rows(), config.tune)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert study.best_value == 1.5 and study.best_params["method.r"] == 4
    assert write_plots(_rows(), config.tune, tmp_path) == []
    assert all((tmp_path / file).stat().st_size > 5_000 for file in PLOTS.values())

    from rayft.tune.sweep import SweepResult

    result = SweepResult(str(tmp_path), _rows(), "t1", 1.5, _rows()[0].params, "best.yaml", "/c1", 65.0, 0.0361)
    table = render_markdown(result, config.tune).splitlines()
    header = next(line for line in table if line.startswith("| trial"))
    assert header == "| trial | status | stop reason | train.lr | method.r | method.type | train.batch_size | best eval_loss | steps | evals | wall s | worker-h |"
    assert "| t3 | ERROR | failed: NaN/inf loss | 0.01 | 2 | lora | 2 | - | 1 | 0 | 5 | 0.0028 |" in table
    assert "| t2 | TERMINATED | stopped early by the scheduler | 0.0001 | - | full | 8 | 3.0000 | 3 | 2 | 10 | 0.0056 |" in table
