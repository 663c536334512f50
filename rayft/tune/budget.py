"""Sweep budgets: wall time and worker-hours (GPU-hours when workers hold GPUs).

`BudgetedSearch` wraps the sweep's search algorithm and is asked before every new trial: when
the trial, at the mean cost of the trials finished so far, would take the sweep past the budget,
it starts no more trials (running ones finish; their checkpoints stay). What was spent is saved
with the searcher's state, so a resumed sweep keeps counting where it stopped. The moment it
fired is written to the sweep directory for the report.

Tune's own `time_budget_s` and Stoppers end running trials once the budget is spent; the issue
asks for the opposite (never start what cannot finish within it), hence this small wrapper.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search import SearchAlgorithm

from rayft.config import BudgetSection

BUDGET_MARKER = "budget_exhausted.json"
BUDGET_STATE = "rayft-budget.json"


def trial_worker_hours(time_total_s: float, num_workers: int) -> float:
    return time_total_s * num_workers / 3600


@dataclass
class BudgetLedger:
    """What the sweep has spent: wall seconds of earlier sessions, and per trial its wall seconds
    (earlier sessions' part kept apart: Tune restarts a resumed trial's clock)."""

    earlier_sessions_s: float = 0.0
    trial_earlier_s: dict[str, float] = field(default_factory=dict)
    trial_session_s: dict[str, float] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)

    def trials(self) -> set[str]:
        return set(self.trial_earlier_s) | set(self.trial_session_s) | set(self.finished)

    def trial_s(self, trial_id: str) -> float:
        return self.trial_earlier_s.get(trial_id, 0.0) + self.trial_session_s.get(trial_id, 0.0)

    def next_session(self, session_s: float) -> BudgetLedger:
        return BudgetLedger(self.earlier_sessions_s + session_s, {t: self.trial_s(t) for t in self.trials()}, {}, list(self.finished))


def exceeding(budget: BudgetSection, ledger: BudgetLedger, elapsed_s: float, running: list[str], num_workers: int) -> str | None:
    """Why one more trial would take the sweep past `budget`, or None. A trial is expected to cost
    what the finished ones cost on average; running trials are expected to reach that too."""
    expected_s = statistics.fmean(ledger.trial_s(t) for t in ledger.finished) if ledger.finished else 0.0
    if budget.wall_time_s is not None and elapsed_s + expected_s > budget.wall_time_s:
        return (
            f"wall time: {elapsed_s:.0f} s spent + {expected_s:.0f} s for another trial > tune.budget.wall_time_s "
            f"{budget.wall_time_s:g}"
        )
    if budget.worker_hours is not None:
        committed_s = sum(ledger.trial_s(t) for t in ledger.finished)
        committed_s += sum(max(ledger.trial_s(t), expected_s) for t in running)
        spent = trial_worker_hours(committed_s, num_workers)
        more = trial_worker_hours(expected_s, num_workers)
        if spent + more > budget.worker_hours:
            return (
                f"worker-hours: {spent:.4f} spent or committed + {more:.4f} for another trial > tune.budget.worker_hours "
                f"{budget.worker_hours:g}"
            )
    return None


class BudgetedSearch(SearchAlgorithm):
    """The sweep's search algorithm (Optuna behind a concurrency limit, or Tune's random/grid
    generator), refusing new trials once the budget would be exceeded."""

    def __init__(self, searcher: SearchAlgorithm, budget: BudgetSection, num_workers: int, sweep_dir: Path) -> None:
        self.searcher = searcher  # the attribute name Tune follows to find a ConcurrencyLimiter
        self.budget, self.num_workers = budget, num_workers
        self.marker = sweep_dir / BUDGET_MARKER
        self.ledger = BudgetLedger()
        self.session_started = time.time()
        self.running: set[str] = set()

    # -- the budget
    def elapsed_s(self) -> float:
        return self.ledger.earlier_sessions_s + time.time() - self.session_started

    def next_trial(self) -> Any:
        if self._finished:
            return None
        reason = exceeding(self.budget, self.ledger, self.elapsed_s(), sorted(self.running), self.num_workers)
        if reason is not None:
            self.set_finished()
            self.marker.write_text(json.dumps({"time": time.time(), "reason": reason, "trials_started": len(self.ledger.trials() | self.running)}) + "\n")
            return None
        trial = self.searcher.next_trial()
        if trial is not None:
            self.running.add(trial.trial_id)
        return trial

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.ledger.trial_session_s[trial_id] = float(result.get("time_total_s", 0.0))
        self.running.add(trial_id)
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if result is not None and "time_total_s" in result:
            self.ledger.trial_session_s[trial_id] = float(result["time_total_s"])
        self.running.discard(trial_id)
        if trial_id not in self.ledger.finished:
            self.ledger.finished.append(trial_id)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    # -- the rest goes to the wrapped algorithm
    @property
    def metric(self) -> str | None:
        return self.searcher.metric

    @property
    def total_samples(self) -> int:
        return self.searcher.total_samples

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def add_configurations(self, experiments: Any) -> None:
        self.searcher.add_configurations(experiments)

    def is_finished(self) -> bool:
        return self._finished or self.searcher.is_finished()

    def set_finished(self) -> None:
        self._finished = True
        self.searcher.set_finished()

    def has_checkpoint(self, dirpath: str) -> bool:
        return self.searcher.has_checkpoint(dirpath)

    def save_to_dir(self, dirpath: str, **kwargs: Any) -> None:
        self.searcher.save_to_dir(dirpath, **kwargs)
        state = {"ledger": asdict(self.ledger.next_session(time.time() - self.session_started)), "finished": self._finished}
        (Path(dirpath) / BUDGET_STATE).write_text(json.dumps(state) + "\n")

    def restore_from_dir(self, dirpath: str) -> None:
        """A resumed sweep: the wrapped searcher's state, and what earlier sessions spent."""
        self.searcher.restore_from_dir(dirpath)
        path = Path(dirpath) / BUDGET_STATE
        if path.is_file():
            state = json.loads(path.read_text())
            self.ledger = BudgetLedger(**state["ledger"])
            self._finished = bool(state["finished"])
        self.session_started = time.time()
        self.running = set()

    @staticmethod
    def saved_ledger(experiment_dir: Path) -> BudgetLedger | None:
        """The ledger as last saved with the searcher (Tune copies it into the experiment directory)."""
        path = experiment_dir / BUDGET_STATE
        return BudgetLedger(**json.loads(path.read_text())["ledger"]) if path.is_file() else None

    @staticmethod
    def fired_at(sweep_dir: Path) -> dict[str, Any] | None:
        marker = sweep_dir / BUDGET_MARKER
        return json.loads(marker.read_text()) if marker.is_file() else None
