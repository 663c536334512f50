"""Sweep budgets: wall time and worker-hours (GPU-hours when workers hold GPUs).

Tune asks a Stopper after every result; once the budget is spent, `stop_all` ends the sweep:
no new trial starts and running ones stop (their checkpoints stay). The moment it fired is
written to the sweep directory, so the report can tell budget stops from scheduler stops.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray import tune

from rayft.config import BudgetSection

BUDGET_MARKER = "budget_exhausted.json"


def trial_worker_hours(time_total_s: float, num_workers: int) -> float:
    return time_total_s * num_workers / 3600


class BudgetStopper(tune.Stopper):
    def __init__(self, budget: BudgetSection, num_workers: int, sweep_dir: Path) -> None:
        self.budget = budget
        self.num_workers = num_workers
        self.marker = sweep_dir / BUDGET_MARKER
        self.started = time.time()
        self.costs: dict[str, float] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.costs[trial_id] = trial_worker_hours(float(result.get("time_total_s", 0.0)), self.num_workers)
        return False

    def stop_all(self) -> bool:
        spent_s = time.time() - self.started
        spent_hours = sum(self.costs.values())
        reason = None
        if self.budget.wall_time_s is not None and spent_s >= self.budget.wall_time_s:
            reason = f"wall time {spent_s:.0f} s >= tune.budget.wall_time_s {self.budget.wall_time_s:g}"
        elif self.budget.worker_hours is not None and spent_hours >= self.budget.worker_hours:
            reason = f"{spent_hours:.4f} worker-hours >= tune.budget.worker_hours {self.budget.worker_hours:g}"
        if reason is None:
            return False
        if not self.marker.exists():
            self.marker.write_text(json.dumps({"time": time.time(), "reason": reason}) + "\n")
        return True

    @staticmethod
    def fired_at(sweep_dir: Path) -> dict[str, Any] | None:
        marker = sweep_dir / BUDGET_MARKER
        return json.loads(marker.read_text()) if marker.is_file() else None
