"""The driver side of a fine-tune: check everything, start Ray, fit a TorchTrainer, write the results.

Everything that can fail deterministically (config, model path, tokenizer, data files) is
checked here before any Ray worker starts.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from rayft.config import ConfigError, ExperimentConfig, config_from_dict, load_config, to_yaml
from rayft.data.classification import LABELS_FILE
from rayft.data.pipeline import check_data_paths, prepare_datasets, read_general
from rayft.data.split import TEST
from rayft.data.report import write_report
from rayft.models.loading import load_tokenizer, model_hidden_size, resolve_base_model, tokenizer_source
from rayft.models.methods.check import check_method
from rayft.tracking.metrics_log import METRICS_FILE, read_metrics
from rayft.tracking.plots import plot_loss_curves
from rayft.tracking.summary import SHOWN, before_after_table
from rayft.training.checkpoint import MODEL_DIR
from rayft.training.cluster import ensure_ray, worker_scaling
from rayft.training.deepspeed_config import build_deepspeed_config, write_deepspeed_config
from rayft.training.evaluation import EvalSettings, general_dataset, run_evaluation
from rayft.training.loop import FAIL_AT_STEP_ENV, LoopSettings, train_loop_per_worker
from rayft.tracking.eval_report import write_eval_report

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
LOSS_PLOT_FILE = "loss.png"


class TrainingFailed(RuntimeError):
    """The Ray Train run ended with an error after its retries."""


@dataclass
class TrainResult:
    run_dir: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    metrics: dict[str, Any]
    best_metrics: dict[str, Any]
    before: dict[str, Any]
    trainable_params: int | None
    total_params: int | None
    data: dict[str, Any]
    wall_time_s: float
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "max_steps"
    """'max_steps' (ran to the end) or 'early_stopping'."""
    stopped_at_step: int | None = None
    best_step: int | None = None
    """Step of the best checkpoint (by eval.metric_for_best)."""
    early_stopping: dict[str, Any] | None = None
    """The early-stopping record when it stopped the run: metric, best value and step, patience."""
    test_metrics: dict[str, Any] | None = None
    """The best checkpoint on the test split (when the data has one), evaluated once at the end."""


def as_config(config: ExperimentConfig | str | Path | dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config_from_dict(config.model_dump(mode="json"), overrides) if overrides else config
    if isinstance(config, dict):
        return config_from_dict(config, overrides)
    return load_config(config, overrides)


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in differing_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def prepare_run_dir(config: ExperimentConfig, resume: bool) -> Path:
    """Decide between a fresh run, a resume of an unfinished one, or an error; write config.yaml.

    An unfinished run with checkpoints resumes only under the same config; one that never
    reached a checkpoint (say, it stopped on a data error) simply starts again.
    """
    run_dir = config.run_dir
    finished = (run_dir / RESULT_FILE).is_file()
    if run_dir.exists() and config.run.overwrite and not resume:
        shutil.rmtree(run_dir)
    elif finished and not resume:
        raise ConfigError(
            f"name: {run_dir} already holds a finished run; pick another name, pass --resume to continue it, "
            "or set run.overwrite=true to start over"
        )
    elif (run_dir / CONFIG_FILE).is_file() and any(run_dir.glob("checkpoint_*")):
        previous = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
        current = config.model_dump(mode="json")
        changed = [k for k in differing_keys(previous, current) if k != "run.overwrite"]
        if changed:
            raise ConfigError(
                f"{changed[0]}: differs from the unfinished run in {run_dir} ({', '.join(changed)}); "
                "resuming needs the same config: restore it, pick another name, or set run.overwrite=true"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(to_yaml(config))
    return run_dir


def build_trainer(
    config: ExperimentConfig, settings: LoopSettings, datasets: dict[str, Any], callbacks: list[Any] | None = None
) -> TorchTrainer:
    """The TorchTrainer of one run; a sweep passes Tune's report callback."""
    score = config.eval.metric_for_best if "validation" in datasets else None
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(settings),
        scaling_config=worker_scaling(config.scaling),
        run_config=RunConfig(
            name=config.name,
            storage_path=str(config.run_dir.parent),
            failure_config=FailureConfig(max_failures=config.run.max_failures),
            callbacks=callbacks,
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.run.num_checkpoints_to_keep,
                checkpoint_score_attribute=score,
                checkpoint_score_order=config.eval.mode,
            ),
        ),
        datasets=datasets,
        # Every worker sees whole splits and takes its own seeded stride (see data/batching.py).
        dataset_config=DataConfig(datasets_to_split=[]),
    )


def _best(checkpoints: list[tuple[Any, dict[str, Any]]], metric: str, mode: str) -> tuple[Any, dict[str, Any]] | None:
    """The checkpoint with the best `metric` in `mode`; without any scored one, the last.

    NaN (a diverged evaluation) is never best: Ray lists it first as the worst, and min/max
    would keep a NaN they meet first because every comparison with it is False.
    """
    scored = [(c, m) for c, m in checkpoints if _is_score(m.get(metric))]
    if not scored:
        return checkpoints[-1] if checkpoints else None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda pair: pair[1][metric])


def _is_score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


@dataclass
class KFoldResult:
    """k runs, one per fold (named <name>-fold<i>), and the mean and std of their best metrics."""

    folds: list[TrainResult]
    mean: dict[str, float]
    std: dict[str, float]
    summary_path: str


def train(
    config: ExperimentConfig | str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    address: str | None = None,
    resume: bool = False,
) -> TrainResult | KFoldResult:
    """Fine-tune as configured; returns (and writes to result.json) the final and best metrics.

    With `data.kfold` and no fold chosen, trains every fold in turn and returns a KFoldResult.
    """
    config = as_config(config, overrides)
    if config.data.kfold is not None and config.data.kfold.fold is None:
        return _train_folds(config, address, resume)
    return _train_one(config, address, resume)


def _train_folds(config: ExperimentConfig, address: str | None, resume: bool) -> KFoldResult:
    assert config.data.kfold is not None
    raw = config.model_dump(mode="json")
    folds = [
        _train_one(config_from_dict(raw, [f"name={json.dumps(f'{config.name}-fold{fold}')}", f"data.kfold.fold={fold}"]), address, resume)
        for fold in range(config.data.kfold.k)
    ]
    names = [name for name in SHOWN if all(isinstance(f.best_metrics.get(name), (int, float)) for f in folds)]
    mean = {name: statistics.fmean(f.best_metrics[name] for f in folds) for name in names}
    std = {name: statistics.stdev(f.best_metrics[name] for f in folds) for name in names}
    path = config.run_dir.parent / f"{config.name}-kfold.json"
    result = KFoldResult(folds, mean, std, str(path))
    path.write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    return result


def _train_one(config: ExperimentConfig, address: str | None, resume: bool) -> TrainResult:
    started = time.time()
    run_dir = prepare_run_dir(config, resume)
    check_data_paths(config.data)
    base_model = resolve_base_model(config.model, run_dir)
    deepspeed_config = None
    if config.train.backend == "deepspeed":
        deepspeed_config = build_deepspeed_config(config, model_hidden_size(base_model, config.model.trust_remote_code))
        write_deepspeed_config(deepspeed_config, run_dir)
    tokenizer_path = tokenizer_source(config.model, base_model)
    # Fail fast, before Ray: a bad tokenizer, or a method that cannot apply to this model.
    load_tokenizer(tokenizer_path, config.model.trust_remote_code, need_eos=config.model.head == "causal_lm")
    check_method(config.model, config.method, base_model, tokenizer_path, config.model.head == "sequence_classification")
    general_rows = read_general(config, run_dir)  # the forgetting monitor's set (eval.general), checked before Ray

    ensure_ray(address, config.scaling.num_workers * config.scaling.cpus_per_worker + 1)
    prepared = prepare_datasets(config, tokenizer_path, run_dir)
    write_report(config, prepared.counts, prepared.facts, run_dir)
    datasets = {name: prepared.datasets[name] for name in ("train", "validation") if name in prepared.datasets}
    general = general_dataset(config, general_rows, tokenizer_path) if "validation" in datasets else None
    if general is not None:
        datasets["general"] = general
    labels = prepared.labels
    if config.model.head == "sequence_classification":
        (run_dir / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n")
    settings = LoopSettings(
        experiment=config.model_dump(mode="json"),
        base_model=base_model,
        tokenizer=tokenizer_path,
        run_dir=str(run_dir),
        has_validation="validation" in datasets,
        fail_at_step=int(os.environ.get(FAIL_AT_STEP_ENV, "0")),
        labels=labels,
        has_general="general" in datasets,
        deepspeed_config=deepspeed_config,
    )
    try:
        result = build_trainer(config, settings, datasets).fit()
    except Exception as err:  # Ray wraps worker errors; keep the root cause readable
        raise TrainingFailed(f"training failed: {err}") from err
    if result.error is not None:
        raise TrainingFailed(f"training failed: {result.error}") from result.error

    records = read_metrics(run_dir / METRICS_FILE)
    start = next((r for r in records if r.get("step") == 0), {})
    checkpoints = list(result.best_checkpoints or [])
    best = _best(checkpoints, config.eval.metric_for_best, config.eval.mode)
    stopped = next((r for r in records if r.get("stop_reason")), None)
    summary = TrainResult(
        run_dir=str(run_dir),
        best_checkpoint=best[0].path if best else None,
        last_checkpoint=result.checkpoint.path if result.checkpoint else None,
        metrics=dict(result.metrics or {}),
        best_metrics=dict(best[1]) if best else {},
        before={k: start[k] for k in [*config.eval_keys, "majority_accuracy"] if k in start},
        trainable_params=start.get("trainable_params"),
        total_params=start.get("total_params"),
        data=asdict(prepared.counts),
        wall_time_s=round(time.time() - started, 2),
        checkpoints=[{"path": c.path, **m} for c, m in checkpoints],
        stop_reason=stopped["stop_reason"] if stopped else "max_steps",
        stopped_at_step=(result.metrics or {}).get("step"),
        best_step=best[1].get("step") if best else None,
        early_stopping=stopped["early_stopping"] if stopped else None,
    )
    (run_dir / RESULT_FILE).write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    plot_loss_curves(records, run_dir / LOSS_PLOT_FILE, f"{config.name}: loss")
    if config.eval.test_at_end and TEST in prepared.datasets and best is not None:
        test_data = {"eval": prepared.datasets[TEST]} | ({"general": datasets["general"]} if "general" in datasets else {})
        summary.test_metrics = _evaluate_test(config, base_model, tokenizer_path, best[0].path, test_data, labels, run_dir)
        summary.wall_time_s = round(time.time() - started, 2)
        (run_dir / RESULT_FILE).write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    return summary


def _evaluate_test(
    config: ExperimentConfig, base_model: str, tokenizer_path: str, checkpoint: str, datasets: dict[str, Any],
    labels: list[str] | None, run_dir: Path,
) -> dict[str, Any]:
    """Score the best checkpoint on the test split, once, as `rayft eval --checkpoint best --split test` would."""
    settings = EvalSettings(
        experiment=config.model_dump(mode="json"), base_model=base_model, tokenizer=tokenizer_path,
        model_dir=str(Path(checkpoint) / MODEL_DIR), labels=labels, has_general="general" in datasets,
    )
    report = write_eval_report(run_evaluation(config, settings, datasets, TEST, checkpoint), run_dir, base=False)
    return report.metrics


def render_kfold_summary(result: KFoldResult) -> str:
    names = list(result.mean)
    rows = [["fold", *names]]
    rows += [[str(i), *(f"{fold.best_metrics[n]:.4f}" for n in names)] for i, fold in enumerate(result.folds)]
    rows.append(["mean ± std", *(f"{result.mean[n]:.4f} ± {result.std[n]:.4f}" for n in names)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return f"\n{len(result.folds)}-fold cross-validation (best checkpoint of each fold), written to {result.summary_path}\n\n" + "\n".join(lines) + "\n"


def render_summary(result: TrainResult) -> str:
    params = ""
    if result.trainable_params is not None and result.total_params:
        share = 100 * result.trainable_params / result.total_params
        params = f"trainable parameters: {result.trainable_params:,} of {result.total_params:,} ({share:.2f}%)\n"
    stopped = ""
    if result.stop_reason == "early_stopping" and result.early_stopping is not None:
        record = result.early_stopping
        stopped = (
            f"stopped early at step {result.stopped_at_step}: {record['metric']} did not improve by more than "
            f"{record['min_delta']} for {record['patience']} evaluations (best {record['best']:.4f} at step {record['best_step']})\n"
        )
    if "majority_accuracy" in result.before:
        params += f"majority-class accuracy on validation (the baseline to beat): {result.before['majority_accuracy']:.4f}\n"
    return (
        f"\nrun directory: {result.run_dir}\n{params}"
        f"best checkpoint: {result.best_checkpoint} (step {result.best_step})\n{stopped}"
        f"wall time: {result.wall_time_s:.1f} s\n\n"
        + before_after_table(result.before, result.best_metrics, result.test_metrics)
        + "\n"
    )
