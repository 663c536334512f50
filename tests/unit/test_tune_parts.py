"""Sweep parts without Ray: search-space validation and sampling, failure reasons, budgets,
and the report built from a trial table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from ray.tune.search import SearchAlgorithm

from rayft.config import BudgetSection, ConfigError, config_from_dict, with_params
from rayft.training.checkpoint import write_marker
from rayft.tune.budget import BUDGET_MARKER, BudgetedSearch, BudgetLedger, exceeding
from rayft.tune.report import (
    COMPLETED, EARLY_STOPPED, EARLY_STOPPING, PLOTS, TrialRow, as_study, failure_reason, render_markdown, trial_run_summary, write_plots,
)
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
    assert failure_reason("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.") == "failed: out of memory"
    with pytest.raises(RuntimeError) as cpu_oom:  # a real allocation failure of torch's CPU allocator (40 TB)
        torch.empty(10**13)
    assert failure_reason(f"RayTaskError(RuntimeError): {cpu_oom.value}") == "failed: out of memory"
    assert failure_reason("RuntimeError: boom\nValueError: last line") == "failed: ValueError: last line"


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


class _Searcher(SearchAlgorithm):
    """Hands out trials t0, t1, ... (a stand-in for the wrapped Optuna or random generator)."""

    def __init__(self) -> None:
        self.made = 0

    def next_trial(self) -> _Trial:
        self.made += 1
        return _Trial(f"t{self.made - 1}")


def test_the_budget_starts_no_trial_that_would_exceed_its_worker_hours(tmp_path: Path) -> None:
    """Pins 'stop starting trials when the budget would be exceeded': the next trial's expected
    cost (the finished trials' mean) counts, and so does what running trials are expected to reach."""
    search = BudgetedSearch(_Searcher(), BudgetSection(worker_hours=0.012), num_workers=2, sweep_dir=tmp_path)
    assert search.next_trial().trial_id == "t0"  # nothing finished yet: no estimate, start
    search.on_trial_complete("t0", {"time_total_s": 9.0})  # 0.005 worker-hours
    assert search.next_trial().trial_id == "t1"  # 0.005 spent + 0.005 expected <= 0.012
    search.on_trial_result("t1", {"time_total_s": 3.0})
    assert search.next_trial() is None  # 0.005 + t1 expected to 0.005 + another 0.005 > 0.012
    assert search.is_finished() and search.searcher.made == 2
    fired = BudgetedSearch.fired_at(tmp_path)
    assert fired is not None and fired["trials_started"] == 2
    assert fired["reason"] == "worker-hours: 0.0100 spent or committed + 0.0050 for another trial > tune.budget.worker_hours 0.012"
    assert (tmp_path / BUDGET_MARKER).is_file()


def test_the_wall_time_budget_counts_earlier_sessions_and_the_expected_trial() -> None:
    ledger = BudgetLedger(earlier_sessions_s=50.0, trial_earlier_s={"a": 30.0}, finished=["a"])
    budget = BudgetSection(wall_time_s=100)
    assert exceeding(budget, ledger, elapsed_s=65.0, running=[], num_workers=1) is None  # 65 + 30 <= 100
    assert exceeding(budget, ledger, elapsed_s=75.0, running=[], num_workers=1) == (
        "wall time: 75 s spent + 30 s for another trial > tune.budget.wall_time_s 100"
    )


def test_budget_state_survives_a_resume(tmp_path: Path) -> None:
    """Pins resume: what a killed session spent is saved with the searcher and counted after restore."""
    first = BudgetedSearch(_Searcher(), BudgetSection(wall_time_s=1000), num_workers=1, sweep_dir=tmp_path)
    first.next_trial()
    first.on_trial_result("t0", {"time_total_s": 40.0})
    first.session_started -= 120  # the first session ran 2 minutes
    first.save_to_dir(str(tmp_path))
    second = BudgetedSearch(_Searcher(), BudgetSection(wall_time_s=1000), num_workers=1, sweep_dir=tmp_path)
    second.restore_from_dir(str(tmp_path))
    assert second.elapsed_s() == pytest.approx(120, abs=1)
    second.on_trial_complete("t0", {"time_total_s": 15.0})  # the trial's clock restarted on resume
    assert second.ledger.trial_s("t0") == 55.0


def _trial_run(run_dir: Path, records: list[dict], checkpoints: dict[str, float | None]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, loss in checkpoints.items():
        (run_dir / name).mkdir()
        if loss is not None:
            write_marker(run_dir / name, 0, 2, {"eval_loss": loss}, {})


def test_a_trials_row_comes_from_its_own_train_run(tmp_path: Path) -> None:
    """Pins the resumed-trial table: steps, evaluations, best metric and best checkpoint come from
    the trial's metrics.jsonl and complete checkpoints (Tune restarts a resumed trial's history);
    an incomplete checkpoint never counts, whatever its metric."""
    records = [
        {"step": 0, "max_steps": 12, "eval_loss": 5.0}, {"step": 3, "loss": 4.0}, {"step": 6, "eval_loss": 2.0},
        {"step": 9, "eval_loss": float("nan")}, {"step": 12, "eval_loss": 2.5}, {"step": 12, "stop_reason": "early_stopping"},
    ]
    _trial_run(tmp_path / "a", records, {"checkpoint_1": 2.5, "checkpoint_2": 1.0})
    (tmp_path / "a" / "checkpoint_2" / "rayft_checkpoint.json").unlink()
    summary = trial_run_summary(tmp_path / "a", "eval_loss", "min")
    assert (summary.steps, summary.planned_steps, summary.evaluations, summary.best_metric) == (12, 12, 4, 2.0)
    assert summary.best_checkpoint == str(tmp_path / "a" / "checkpoint_1") and summary.early_stopped
    assert trial_run_summary(tmp_path / "missing", "eval_loss", "min").steps == 0


def test_random_search_samples_conditional_keys_whatever_their_order() -> None:
    """Pins a bug: a condition listed before the key it reads always saw it unsampled (method.r was
    never searched when method.type came later in the YAML)."""
    from ray.tune.search.variant_generator import generate_variants

    section = config_from_dict({**tiny_experiment(Path("/tmp")), "tune": {"space": SPACE, "search": "random"}}).tune
    assert list(section.space)[:3] == ["train.lr", "method.r", "method.type"]  # the condition comes first
    space = tune_space(section, {"method": {"type": "lora"}})
    seen = []
    state = np.random.RandomState(0)
    for _ in range(16):
        for _, resolved in generate_variants(space, random_state=state):
            seen.append(resolved)
    assert {v["method.type"] for v in seen} == {"lora", "full"}
    assert all((v["method.r"] is not None) == (v["method.type"] == "lora") for v in seen)


def test_a_condition_on_a_key_that_does_not_exist_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tune.space.method.r.when: method.typo = 'lora' does not fit the config \(unknown key\)"):
        _config(tmp_path, {"method.r": {"choice": [2, 4], "when": {"method.typo": "lora"}}})


@pytest.mark.parametrize(("resources", "scaling", "expected"), [
    ({"CPU": 7}, {"num_workers": 2}, 2),  # a trial holds 1 + 2 CPUs
    ({"CPU": 2}, {"num_workers": 2, "cpus_per_worker": 0.5}, 1),
    ({"CPU": 2}, {"num_workers": 4}, 1),  # never 0: one trial waits for what it needs
    ({"CPU": 64, "GPU": 4}, {"num_workers": 2, "use_gpu": True}, 2),  # GPUs bind first
])
def test_concurrent_trials_follow_the_cluster_and_the_scaling(tmp_path: Path, resources: dict, scaling: dict, expected: int) -> None:
    from rayft.tune.sweep import concurrent_trials

    config = config_from_dict({**tiny_experiment(tmp_path, scaling=scaling), "tune": {"space": {"train.lr": {"choice": [0.1]}}}})
    assert concurrent_trials(config, resources) == expected


def test_a_resumed_sweep_must_keep_its_config(tmp_path: Path) -> None:
    """Pins silent drift: Tune restores the searcher and num_samples as they were, so a changed value
    on --resume is refused naming the key; a batch size found by the search is taken over."""
    from rayft.config import to_yaml
    from rayft.tune.sweep import _as_interrupted

    config = _config(tmp_path, {"train.lr": {"choice": [0.1, 0.2]}}, batch_size_search={"max": 16})
    found = config_from_dict(config.model_dump(mode="json"), ["train.batch_size=5"])
    (tmp_path / "config.yaml").write_text(to_yaml(found))
    assert _as_interrupted(config, tmp_path).train.batch_size == 5
    changed = config_from_dict(config.model_dump(mode="json"), ["tune.num_samples=9"])
    with pytest.raises(ConfigError, match=r"^tune.num_samples: differs from the interrupted sweep"):
        _as_interrupted(changed, tmp_path)


def _rows() -> list[TrialRow]:
    return [
        TrialRow("t1", "TERMINATED", COMPLETED, {"train.lr": 1e-3, "method.r": 4, "method.type": "lora", "train.batch_size": 4}, 1.5, 12, 5, 30.0, 0.0167, "/c1"),
        TrialRow("t2", "TERMINATED", EARLY_STOPPED, {"train.lr": 1e-4, "method.type": "full", "train.batch_size": 8}, 3.0, 3, 2, 10.0, 0.0056, None),
        TrialRow("t3", "ERROR", "failed: NaN/inf loss", {"train.lr": 1e-2, "method.r": 2, "method.type": "lora", "train.batch_size": 2}, None, 1, 0, 5.0, 0.0028, None),
        TrialRow("t4", "TERMINATED", EARLY_STOPPING, {"train.lr": 5e-4, "method.r": 2, "method.type": "lora", "train.batch_size": 6}, 2.0, 6, 3, 20.0, 0.011, "/c4"),
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


@pytest.mark.parametrize(("limit", "upper", "expected"), [(37, 256, 37), (1, 8, 1), (0, 8, 0), (500, 64, 64), (64, 64, 64)])
def test_batch_size_search_finds_the_largest_size_that_fits(limit: int, upper: int, expected: int) -> None:
    from rayft.tune.batch_size import search_largest

    tried: list[int] = []

    def fits(size: int) -> bool:
        tried.append(size)
        return size <= limit

    assert search_largest(fits, upper) == expected
    assert len(tried) <= 2 * upper.bit_length() + 1  # doubling, then bisection


def test_batch_size_search_excludes_searching_the_batch_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tune.batch_size_search: sets train.batch_size for every trial"):
        _config(tmp_path, {"train.batch_size": {"choice": [4, 8]}}, batch_size_search={"max": 16})


def test_choices_take_the_type_the_config_gives_them(tmp_path: Path) -> None:
    """Pins a bug: YAML reads 1.0e15 (no exponent sign) as a string; the trial config coerced it,
    but the searcher and the trial table kept the string."""
    config = _config(tmp_path, {"train.lr": {"choice": ["1.0e15", 0.01]}, "method.r": {"grid": ["4", 8]}}, search="grid")
    assert config.tune.space["train.lr"].choice == [1e15, 0.01] and isinstance(config.tune.space["train.lr"].choice[0], float)
    assert config.tune.space["method.r"].grid == [4, 8]
