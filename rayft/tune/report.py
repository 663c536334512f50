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
from rayft.training.loop import NON_FINITE_LOSS  # noqa: E402
from rayft.tune.budget import trial_worker_hours  # noqa: E402

if TYPE_CHECKING:
    from rayft.tune.sweep import SweepResult

SWEEP_JSON, SWEEP_MD = "sweep.json", "sweep.md"
PLOTS = {"history": "optimization_history.png", "importance": "param_importances.png", "parallel": "parallel_coordinates.png"}
COMPLETED, EARLY_STOPPED, BUDGET = "completed", "stopped early by the scheduler", "stopped by the budget"


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
    if "OutOfMemoryError" in text or "out of memory" in text.lower():
        return "failed: out of memory"
    return "failed: " + (text.strip().splitlines() or ["error"])[-1][:200]


def summarise_trials(grid: Any, section: TuneSection, num_workers: int, budget_stop: dict[str, Any] | None) -> list[TrialRow]:
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        last = result.metrics or {}
        params = {k: v for k, v in (result.config or {}).items() if v is not None}
        trial_id = str(last.get("trial_id") or Path(result.path).name)
        best_metric, best_checkpoint, steps, evaluations, wall = None, None, 0, 0, 0.0
        if history is not None and not history.empty:
            wall = float(history["time_total_s"].max())
            steps = int(history["step"].max()) if "step" in history else 0
            if section.metric in history:
                scored = history[history[section.metric].notna()]
                evaluations = len(scored)
                if not scored.empty:
                    best_row = scored.loc[scored[section.metric].idxmin() if section.mode == "min" else scored[section.metric].idxmax()]
                    best_metric = float(best_row[section.metric])
            if "checkpoint_path" in history:
                saved = history[history["checkpoint_path"].notna()]
                if not saved.empty:
                    ranked = saved.sort_values(section.metric, ascending=section.mode == "min") if section.metric in saved else saved.iloc[::-1]
                    best_checkpoint = str(ranked.iloc[0]["checkpoint_path"])
        if result.error is not None:
            status, reason = "ERROR", failure_reason(result.error)
            best_metric = None  # a failed trial never counts as the best
        elif last.get("done"):
            status, reason = "TERMINATED", COMPLETED
        elif budget_stop is not None and float(last.get("timestamp", 0)) >= budget_stop["time"] - 60:
            status, reason = "TERMINATED", BUDGET
        else:
            status, reason = "TERMINATED", EARLY_STOPPED
        rows.append(TrialRow(
            trial_id, status, reason, params, best_metric, steps, evaluations, round(wall, 1),
            round(trial_worker_hours(wall, num_workers), 5), best_checkpoint,
        ))
    return sorted(rows, key=lambda row: row.trial_id)


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
        + (" (stopped by the budget)" if result.stopped_by_budget else "") + ".", "",
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
