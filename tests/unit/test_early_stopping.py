"""Early stopping: the exact step it stops at, in both modes, and the two bugs of the seed
document's version (lower treated as worse; a worse value resetting the best) pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayft.config import ConfigError, config_from_dict
from rayft.evaluate.early_stopping import EarlyStopping
from tests.conftest import tiny_experiment


def _stop_step(stopper: EarlyStopping, values: list[float], every: int = 10) -> int | None:
    """Feed one evaluation every `every` steps; the step it stops at, or None."""
    for index, value in enumerate(values, start=1):
        if stopper.update(index * every, {stopper.metric: value}):
            return index * every
    return None


def test_min_mode_stops_after_patience_evaluations_without_improvement() -> None:
    stopper = EarlyStopping("eval_loss", "min", patience=2)
    assert _stop_step(stopper, [3.0, 2.0, 2.5, 1.9, 1.95, 2.1, 1.0]) == 60
    assert (stopper.best, stopper.best_step, stopper.stopped_step) == (1.9, 40, 60)


def test_max_mode_stops_after_patience_evaluations_without_improvement() -> None:
    stopper = EarlyStopping("accuracy", "max", patience=2)
    assert _stop_step(stopper, [0.5, 0.7, 0.6, 0.8, 0.75, 0.79, 0.9]) == 60
    assert (stopper.best, stopper.best_step) == (0.8, 40)


def test_lower_is_an_improvement_in_min_mode() -> None:
    """Pins the seed document's first bug: it counted a lower loss as worse."""
    stopper = EarlyStopping("eval_loss", "min", patience=1)
    assert _stop_step(stopper, [3.0, 2.0, 1.0, 0.5]) is None
    assert stopper.best == 0.5


def test_a_worse_value_never_resets_the_best() -> None:
    """Pins the seed document's second bug: a slightly worse value replaced the best."""
    stopper = EarlyStopping("eval_loss", "min", patience=3, min_delta=0.1)
    assert _stop_step(stopper, [1.0, 1.05, 1.02, 1.01]) == 40
    assert (stopper.best, stopper.best_step) == (1.0, 10)


def test_improvement_must_exceed_min_delta() -> None:
    stopper = EarlyStopping("eval_loss", "min", patience=2, min_delta=0.1)
    # 0.95 and 0.9 are better, but not by more than 0.1: no improvement; 0.85 would be
    assert _stop_step(stopper, [1.0, 0.95, 0.9]) == 30
    assert stopper.best == 1.0
    stopper = EarlyStopping("accuracy", "max", patience=2, min_delta=0.1)
    assert _stop_step(stopper, [0.5, 0.61, 0.65, 0.7, 0.9]) == 40  # 0.61 improves (by 0.11); 0.65, 0.7 do not
    assert (stopper.best, stopper.best_step) == (0.61, 20)


def test_nan_is_never_an_improvement() -> None:
    stopper = EarlyStopping("eval_loss", "min", patience=1)
    assert _stop_step(stopper, [1.0, float("nan")]) == 20


def test_state_round_trips_so_a_resumed_run_stops_at_the_same_step() -> None:
    straight = EarlyStopping("eval_loss", "min", patience=2)
    values = [3.0, 2.0, 2.5, 2.4, 1.0]
    expected = _stop_step(straight, values)
    first = EarlyStopping("eval_loss", "min", patience=2)
    _stop_step(first, values[:3])
    resumed = EarlyStopping.from_state(first.state_dict())
    stop = next((10 * i for i, v in enumerate(values[3:], start=4) if resumed.update(10 * i, {"eval_loss": v})), None)
    assert stop == expected == 40


def test_a_missing_metric_is_named() -> None:
    with pytest.raises(ValueError, match="train.early_stopping.metric: 'accuracy'"):
        EarlyStopping("accuracy", "max", patience=1).update(10, {"eval_loss": 1.0})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.early_stopping={metric: bleu}"], "train.early_stopping.metric: 'bleu' is not reported; choose one of eval_loss"),
        (["train.early_stopping={patience: 0}"], "train.early_stopping.patience: Input should be greater than or equal to 1"),
        (["train.early_stopping={mode: up}"], "train.early_stopping.mode: Input should be 'min' or 'max'"),
        (["train.early_stopping={}", "data.split.val=0"], "train.early_stopping: needs a validation split"),
        (["train.early_stopping={}", "train.eval_steps=null"], "train.early_stopping: needs a validation split"),
    ],
)
def test_bad_early_stopping_config_names_the_key(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(tiny_experiment(tmp_path), overrides)
    assert str(caught.value).startswith(message)


def test_early_stopping_on_a_generation_metric_is_accepted(tmp_path: Path) -> None:
    config = config_from_dict(tiny_experiment(tmp_path), ["train.early_stopping={metric: exact_match, mode: max, patience: 2}"])
    assert config.train.early_stopping is not None and config.train.early_stopping.mode == "max"
