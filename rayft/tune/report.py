"""The sweep's table, plots and markdown summary.

Plots come from Optuna's matplotlib visualisations over a study rebuilt from the trial table,
so random and grid sweeps get the same pictures as Optuna ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rayft.config import SearchDimension, TuneSection  # noqa: E402
from rayft.tracking.metrics_log import METRICS_FILE, read_metrics  # noqa: E402
from rayft.training.checkpoint import IncompleteCheckpointError, read_marker  # noqa: E402
from rayft.training.loop import NON_FINITE_LOSS  # noqa: E402
from rayft.tune.budget import trial_worker_hours  # noqa: E402

if TYPE_CHECKING:
    from rayft.tune.sweep import SweepResult

SWEEP_JSON, SWEEP_MD = "sweep.json", "sweep.md"
PLOTS = {"history": "optimization_history.png", "importance": "param_importances.png", "parallel": "parallel_coordinates.png"}
COMPLETED, EARLY_STOPPED = "completed", "stopped early by the scheduler"
EARLY_STOPPING = "stopped by train.early_stopping"


@dataclass
class TrialRow:
    trial_id: str
    status: str
    stop_reason: str
    params: dict[str, Any]
    best_metric: float | None
    steps: int
    evaluations: int
    wall_time_s: float
    worker_hours: float
    best_checkpoint: str | None


def failure_reason(error: BaseException | str) -> str:
    """Why a trial failed, in the words the table and the searcher's history use."""
    text = str(error)
    if NON_FINITE_LOSS in text:
        return "failed: NaN/inf loss"
    lowered = text.lower()
    # CUDA: torch.OutOfMemoryError; CPU: the allocator's "can't allocate memory"; Ray's memory monitor
    # killing a worker: ray.exceptions.OutOfMemoryError.
    if "outofmemoryerror" in lowered or "out of memory" in lowered or "can't allocate memory" in lowered:
        return "failed: out of memory"
    return "failed: " + (text.strip().splitlines() or ["error"])[-1][:200]


def summarise_trials(
    grid: Any, section: TuneSection, num_workers: int, trials_dir: Path, trial_seconds: dict[str, float] | None = None
) -> list[TrialRow]:
    """One row per trial. Steps, evaluations, the best metric and the best checkpoint come from the
    trial's own Train run (`trials/<id>/`): Tune restarts a resumed trial's history, the run's
    metrics.jsonl and checkpoint markers hold all of it. Status and error come from Tune; wall
    time from the budget's ledger (every session of the trial) where it has the trial."""
    rows = []
    for result in grid:
        last = result.metrics or {}
        params = {k: v for k, v in (result.config or {}).items() if v is not None}
        trial_id = str(last.get("trial_id") or _trial_id_from_path(Path(result.path).name))
        run = trial_run_summary(trials_dir / trial_id, section.metric, section.mode)
        best_metric, steps, planned = run.best_metric, run.steps, run.planned_steps
        history = result.metrics_dataframe
        wall = float(history["time_total_s"].max()) if history is not None and not history.empty else 0.0
        wall = max(wall, (trial_seconds or {}).get(trial_id, 0.0))
        if result.error is not None:
            status, reason = "ERROR", failure_reason(result.error)
            best_metric = None  # a failed trial never counts as the best
        elif planned is not None and steps >= planned:  # Tune's `done` flag is set on scheduler stops too
            status, reason = "TERMINATED", COMPLETED
        elif run.early_stopped:
            status, reason = "TERMINATED", EARLY_STOPPING
        else:
            status, reason = "TERMINATED", EARLY_STOPPED
        rows.append(TrialRow(
            trial_id, status, reason, params, best_metric, steps, run.evaluations, round(wall, 1),
            round(trial_worker_hours(wall, num_workers), 5), run.best_checkpoint,
        ))
    return sorted(rows, key=lambda row: row.trial_id)


def _trial_id_from_path(name: str) -> str:
    """Tune names a trial's directory run_trial_<id>_<index>_<params>_<time>."""
    return name.removeprefix("run_trial_").split("_", 1)[0]


@dataclass
class TrialRunSummary:
    steps: int = 0
    planned_steps: int | None = None
    evaluations: int = 0
    best_metric: float | None = None
    best_checkpoint: str | None = None
    early_stopped: bool = False
    """The run's own early stopping (train.early_stopping) ended it."""


def trial_run_summary(run_dir: Path, metric: str, mode: str) -> TrialRunSummary:
    """What a trial's Train run did: its metrics.jsonl (steps, evaluations, the planned steps
    reported at step 0) and its complete checkpoints (the best one by `metric`)."""
    records = read_metrics(run_dir / METRICS_FILE)
    summary = TrialRunSummary(steps=max((int(r["step"]) for r in records if "step" in r), default=0))
    summary.planned_steps = next((int(r["max_steps"]) for r in records if "max_steps" in r), None)
    summary.early_stopped = any(r.get("stop_reason") == "early_stopping" for r in records)
    scores = [float(r[metric]) for r in records if isinstance(r.get(metric), (int, float))]
    summary.evaluations = len(scores)
    finite = [value for value in scores if math.isfinite(value)]
    pick = min if mode == "min" else max
    summary.best_metric = pick(finite) if finite else None
    scored = []
    for directory in sorted(run_dir.glob("checkpoint_*")):
        try:
            value = read_marker(directory)["metrics"].get(metric)
        except IncompleteCheckpointError:
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            scored.append((float(value), str(directory)))
    if scored:
        summary.best_checkpoint = pick(scored, key=lambda pair: pair[0])[1]
    return summary


def _distribution(dimension: SearchDimension) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dimension.uniform is not None:
        return FloatDistribution(*dimension.uniform)
    if dimension.loguniform is not None:
        return FloatDistribution(*dimension.loguniform, log=True)
    if dimension.int_range is not None:
        return IntDistribution(*dimension.int_range)
    return CategoricalDistribution(dimension.choice or dimension.grid or [])


def as_study(trials: list[TrialRow], section: TuneSection) -> Any:
    """An in-memory Optuna study holding the sweep's trials (failed ones as FAIL, early-stopped ones
    as PRUNED with their best value so far)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if section.mode == "min" else "maximize")
    for row in trials:
        params = {k: v for k, v in row.params.items() if k in section.space}
        distributions = {k: _distribution(section.space[k]) for k in params}
        if row.status == "ERROR" or row.best_metric is None or not math.isfinite(row.best_metric):
            state, value = optuna.trial.TrialState.FAIL, None
        else:
            state, value = optuna.trial.TrialState.COMPLETE, row.best_metric
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value, state=state))
    return study


def write_plots(trials: list[TrialRow], section: TuneSection, sweep_dir: Path) -> list[str]:
    """Optuna's matplotlib plots as PNG files; returns notes on plots that could not be drawn."""
    from optuna.visualization import matplotlib as optuna_plots

    study = as_study(trials, section)
    notes = []
    draw = {"history": optuna_plots.plot_optimization_history, "importance": optuna_plots.plot_param_importances,
            "parallel": optuna_plots.plot_parallel_coordinate}
    for name, plot in draw.items():
        try:
            axis = plot(study)
            figure = axis.figure if hasattr(axis, "figure") else axis.flat[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(sweep_dir / PLOTS[name], dpi=110)
            plt.close(figure)
        except (ValueError, RuntimeError) as err:  # e.g. importances need two finished trials
            notes.append(f"{PLOTS[name]} not drawn: {err}")
    return notes


def render_markdown(result: SweepResult, section: TuneSection) -> str:
    keys = list(section.space)
    lines = [
        f"# Sweep {Path(result.sweep_dir).name}", "",
        f"{len(result.trials)} trials, search {section.search}, scheduler {section.scheduler.type}; "
        f"{section.metric} ({section.mode}). Wall time {result.wall_time_s:.0f} s, {result.worker_hours:.4f} worker-hours"
        + "." + (f" The budget started no more trials: {result.budget_stop}." if result.budget_stop else ""), "",
        f"Best: trial {result.best_trial}, {section.metric} = {result.best_metric}, {result.best_params}", "",
        f"Best config: `{result.best_config}`  ", f"Best checkpoint: `{result.best_checkpoint}`", "",
        "| trial | status | stop reason | " + " | ".join(keys) + f" | best {section.metric} | steps | evals | wall s | worker-h |",
        "|---|---|---|" + "---|" * len(keys) + "---:|---:|---:|---:|---:|",
    ]
    for row in result.trials:
        values = " | ".join(_cell(row.params.get(k)) for k in keys)
        metric = "-" if row.best_metric is None else f"{row.best_metric:.4f}"
        lines.append(f"| {row.trial_id} | {row.status} | {row.stop_reason} | {values} | {metric} | {row.steps} | {row.evaluations} | {row.wall_time_s:.0f} | {row.worker_hours:.4f} |")
    lines += ["", *(f"![{name}]({file})" for name, file in PLOTS.items())]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_sweep_report(result: SweepResult, section: TuneSection, sweep_dir: Path) -> list[str]:
    notes = write_plots(result.trials, section, sweep_dir)
    (sweep_dir / SWEEP_MD).write_text(render_markdown(result, section) + "".join(f"\n{note}\n" for note in notes))
    return notes


def render_summary(result: SweepResult, section: TuneSection) -> str:
    """What `rayft tune` prints at the end."""
    return "\n" + render_markdown(result, section).split("\n![")[0] + f"\nreport: {Path(result.sweep_dir) / SWEEP_MD}\n"
