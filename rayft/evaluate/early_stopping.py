"""Early stopping on a reported validation metric.

The seed document's version has two bugs this one does not: it treats a lower value as worse
whatever the metric, and it lets a value that is not an improvement replace the best. Here an
improvement is a value better than the best by more than min_delta in the direction of `mode`;
only an improvement replaces the best and resets the count of evaluations without one.

Every rank feeds the same (all-reduced) values in the same order, so every rank decides to stop
at the same step. The state is small and goes into checkpoints, so a resumed run stops where an
uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass
class EarlyStopping:
    metric: str
    mode: Literal["min", "max"]
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evaluations: int = 0
    stopped_step: int | None = None

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, step: int, metrics: dict[str, Any]) -> bool:
        """Record the evaluation at `step`; True when training should stop now."""
        if self.metric not in metrics:
            raise ValueError(f"train.early_stopping.metric: {self.metric!r} is not among this evaluation's metrics ({', '.join(metrics)})")
        value = float(metrics[self.metric])
        if self.improves(value):
            self.best, self.best_step, self.bad_evaluations = value, step, 0
        else:
            self.bad_evaluations += 1
        if self.bad_evaluations >= self.patience:
            self.stopped_step = step
            return True
        return False

    def reason(self) -> str:
        return (
            f"{self.metric} did not improve by more than {self.min_delta} ({self.mode}) for {self.patience} "
            f"evaluations; best {self.best} at step {self.best_step}"
        )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EarlyStopping:
        return cls(**state)
