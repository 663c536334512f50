"""Trial schedulers that keep what they learnt across `rayft tune --resume`.

Tune checkpoints the searcher with the experiment, but never its scheduler: a restored sweep
gets the scheduler as it was pickled at the start, with empty ASHA rungs and no median history,
so every trial after a resume is compared only with trials that ran after it. These subclasses
write their state to the sweep directory after every result they act on and read it back when
the restored Tuner hands them the search properties again.
"""

from __future__ import annotations

import os
import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ray.tune import schedulers
from ray.tune.experiment import Trial

from rayft.config import SchedulerSection

SCHEDULER_STATE = "rayft-scheduler.pkl"


def _write_atomically(path: Path, payload: bytes) -> None:
    """A crash mid-write leaves the previous state, never a truncated one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(payload)
    os.replace(partial, path)


class _Persistent(ABC):
    """Mixin: save after every result or completion; restore once, when Tune sets the metric."""

    _state_path: str

    @abstractmethod
    def _saved_state(self) -> dict[str, Any]:
        """What to keep: plain data keyed by trial id (Trial objects do not survive a restore)."""

    @abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None:
        """Take back what `_saved_state` kept."""

    def _persist(self) -> None:
        _write_atomically(Path(self._state_path), pickle.dumps(self._saved_state()))

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        accepted = super().set_search_properties(metric, mode, **spec)  # type: ignore[misc]
        path = Path(self._state_path)
        if path.is_file():
            self._load_state(pickle.loads(path.read_bytes()))
        return accepted

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]
        self._persist()
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        super().on_trial_complete(tune_controller, trial, result)  # type: ignore[misc]
        self._persist()


class PersistentASHA(_Persistent, schedulers.AsyncHyperBandScheduler):
    """ASHA whose rungs (trial id -> metric at each milestone) survive a resume. A resumed
    trial is already recorded at the rungs it passed, so it is not judged there twice."""

    def __init__(self, state_path: Path, **asha: Any) -> None:
        super().__init__(**asha)
        self._state_path = str(state_path)

    def _saved_state(self) -> dict[str, Any]:
        # Rungs are keyed by trial id; trials are assigned their bracket again as Tune adds them back.
        return {"rungs": [[dict(recorded) for _, recorded in bracket._rungs] for bracket in self._brackets],
                "num_stopped": self._num_stopped}

    def _load_state(self, state: dict[str, Any]) -> None:
        for bracket, rungs in zip(self._brackets, state["rungs"]):
            for (_, recorded), saved in zip(bracket._rungs, rungs):
                recorded.update(saved)
        self._num_stopped = state["num_stopped"]


class PersistentMedianStopping(_Persistent, schedulers.MedianStoppingRule):
    """The median stopping rule with every trial's past results kept across a resume. The rule
    keys results by Trial object; saved by trial id, they go back under the restored Trial
    objects as Tune adds them (finished trials included)."""

    def __init__(self, state_path: Path, **median: Any) -> None:
        super().__init__(**median)
        self._state_path = str(state_path)
        self._restored: dict[str, Any] = {"results": {}, "stopped": []}

    def _saved_state(self) -> dict[str, Any]:
        return {"results": {trial.trial_id: results for trial, results in self._results.items()},
                "stopped": [trial.trial_id for trial in self._stopped_trials]}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._restored = state

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if trial.trial_id in self._restored["results"]:
            self._results[trial] = self._restored["results"].pop(trial.trial_id)
        if trial.trial_id in self._restored["stopped"]:
            self._stopped_trials.add(trial)


def build_scheduler(spec: SchedulerSection, state_path: Path) -> schedulers.TrialScheduler | None:
    if spec.type == "asha":
        return PersistentASHA(
            state_path, time_attr=spec.time_attr, grace_period=spec.grace_period, reduction_factor=spec.reduction_factor,
            max_t=spec.max_t or 10**9,
        )
    if spec.type == "median":
        return PersistentMedianStopping(state_path, time_attr=spec.time_attr, grace_period=spec.grace_period, min_samples_required=2)
    return None
