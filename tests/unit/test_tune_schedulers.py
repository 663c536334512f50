"""Schedulers keep their history across a resume: a sweep restored from its directory judges new
trials against the trials of the interrupted session (Tune itself restores a fresh scheduler)."""

from __future__ import annotations

from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from rayft.config import SchedulerSection
from rayft.tune.schedulers import SCHEDULER_STATE, build_scheduler


def _scheduler(spec: SchedulerSection, path: Path) -> TrialScheduler:
    scheduler = build_scheduler(spec, path)
    assert scheduler is not None
    assert scheduler.set_search_properties("eval_loss", "min")
    return scheduler


def _trial(trial_id: str) -> Trial:
    return Trial("__fake", trial_id=trial_id, stub=True)


def _result(iteration: int, loss: float) -> dict[str, float]:
    return {"training_iteration": iteration, "eval_loss": loss}


class _NoTrialsWaiting:
    """What the median rule asks Tune when it lacks samples: whether another trial waits to run."""

    def get_live_trials(self) -> list[Trial]:
        return []


def _finish(scheduler: TrialScheduler, trial_id: str, losses: list[float]) -> None:
    trial = _trial(trial_id)
    scheduler.on_trial_add(None, trial)
    for iteration, loss in enumerate(losses[:-1], start=1):
        assert scheduler.on_trial_result(_NoTrialsWaiting(), trial, _result(iteration, loss)) == TrialScheduler.CONTINUE
    scheduler.on_trial_complete(None, trial, _result(len(losses), losses[-1]))


def _decisions(scheduler: TrialScheduler, trial_id: str, losses: list[float]) -> list[str]:
    trial = _trial(trial_id)
    scheduler.on_trial_add(None, trial)
    return [scheduler.on_trial_result(_NoTrialsWaiting(), trial, _result(i, loss)) for i, loss in enumerate(losses, start=1)]


def test_asha_rungs_survive_a_resume(tmp_path: Path) -> None:
    spec = SchedulerSection(type="asha", grace_period=1, reduction_factor=2, max_t=4)
    path = tmp_path / SCHEDULER_STATE
    first = _scheduler(spec, path)
    _finish(first, "good1", [1.0, 0.8, 0.6, 0.5])
    _finish(first, "good2", [0.9, 0.7, 0.6, 0.5])  # better at every rung: never stopped
    assert path.is_file()

    # Tune restores the scheduler pickled at the start (empty) and sets its metric again.
    restored = _scheduler(spec, path)
    assert _decisions(restored, "poor", [3.0]) == [TrialScheduler.STOP]  # worse than both at rung 1
    fresh = _scheduler(spec, tmp_path / "elsewhere.pkl")
    assert _decisions(fresh, "poor", [3.0]) == [TrialScheduler.CONTINUE]  # nothing to compare with


def test_asha_does_not_judge_a_resumed_trial_again_at_a_rung_it_passed(tmp_path: Path) -> None:
    spec = SchedulerSection(type="asha", grace_period=1, reduction_factor=2, max_t=4)
    path = tmp_path / SCHEDULER_STATE
    first = _scheduler(spec, path)
    _finish(first, "best", [0.1, 0.1, 0.1, 0.1])
    assert _decisions(first, "slow", [0.05]) == [TrialScheduler.CONTINUE]  # passes rung 1 and is recorded there

    restored = _scheduler(spec, path)
    # The resumed trial reports rung 1 again with a far worse value: already recorded, it goes on.
    assert _decisions(restored, "slow", [5.0]) == [TrialScheduler.CONTINUE]


def test_median_rule_history_survives_a_resume(tmp_path: Path) -> None:
    spec = SchedulerSection(type="median", grace_period=1)
    path = tmp_path / SCHEDULER_STATE
    first = _scheduler(spec, path)
    _finish(first, "a", [1.0, 0.9, 0.8])
    _finish(first, "b", [1.0, 0.8, 0.7])

    restored = _scheduler(spec, path)
    for trial_id in ("a", "b"):  # Tune adds the finished trials back as it restores the experiment
        restored.on_trial_add(None, _trial(trial_id))
    assert _decisions(restored, "poor", [4.0]) == [TrialScheduler.STOP]  # Tune sends a stopped trial nothing more
    fresh = _scheduler(spec, tmp_path / "elsewhere.pkl")
    assert _decisions(fresh, "poor", [4.0, 4.0]) == [TrialScheduler.CONTINUE, TrialScheduler.CONTINUE]
