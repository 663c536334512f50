"""`rayft eval`: score a checkpoint (or the base model) on a split, in parallel on Ray.

The workers are a small TorchTrainer running an eval-only loop, not a Ray Data map: they run the
very function that evaluated during training (evaluate_split: the same sharding by rank, batch
size, summed losses, gathered answers and one scoring of them), in a process group of the same
size. That is what makes `rayft eval --checkpoint best` reproduce the metrics recorded when the
checkpoint was saved, and it keeps one implementation of evaluation instead of two. The price is
Train's worker start-up (about 20 s on a 2-core machine), small next to loading a real model.

Splits are rebuilt from the config by the very pipeline training ran (prepare_datasets: reading,
validation and splitting are deterministic by seed), so the evaluated rows are the ones training
validated on; the label set of a classification task is the sorted labels of the training split,
as during training. (All splits are tokenized for that, a few seconds on Ray Data.)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import DataConfig, RunConfig
from ray.train.torch import TorchTrainer

from rayft.config import ExperimentConfig, UserInputError
from rayft.data.batching import load_examples
from rayft.data.pipeline import check_data_paths, general_data_config, prepare_datasets, read_general, tokenize_rows
from rayft.data.split import TEST, TRAIN, VAL
from rayft.evaluate.metrics import label_confusion
from rayft.evaluate.validation import EvalTask, evaluate_split
from rayft.models.loading import load_tokenizer, load_with_head, resolve_base_model, tokenizer_source
from rayft.models.methods import MethodContext, apply_method
from rayft.tracking.eval_report import EvalReport, write_eval_report
from rayft.training.checkpoint import (
    MARKER_FILE, MODEL_DIR, STATE_FILE, IncompleteCheckpointError, load_checkpoint_weights, read_marker,
)
from rayft.training.cluster import ensure_ray, worker_scaling
from rayft.training.loop import _quiet_report_logging as quiet_report_logging  # the same Train log noise

RESULT_FILE = "result.json"
OUTCOME_FILE = "outcome.json"
SAMPLES = 10


class EvaluationFailed(RuntimeError):
    """The evaluation workers failed (after Ray's report of the cause)."""


@dataclass(frozen=True)
class EvalSettings:
    """What the driver resolved for the evaluation workers."""

    experiment: dict[str, Any]
    base_model: str
    tokenizer: str
    model_dir: str | None
    """A checkpoint's model/ directory; None evaluates the base model as it is."""
    labels: list[str] | None
    has_general: bool


def eval_loop_per_worker(settings: dict[str, Any]) -> None:
    """Load the model, evaluate this rank's share of the 'eval' dataset, report once per rank."""
    run = EvalSettings(**settings)
    config = ExperimentConfig.model_validate(run.experiment)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if not config.scaling.use_gpu:
        torch.set_num_threads(max(1, int(config.scaling.cpus_per_worker)))  # as in training: same arithmetic
    quiet_report_logging()
    head = config.model.head == "sequence_classification"
    tokenizer = load_tokenizer(run.tokenizer, need_eos=not head)
    model = load_with_head(config.model, run.base_model, run.labels, tokenizer.pad_token_id)
    if run.model_dir is not None:  # the module structure training saved from, then its weights
        model = apply_method(model, config.method, MethodContext.for_head(head, run.tokenizer))
        load_checkpoint_weights(model, Path(run.model_dir))
    model.to(ray.train.torch.get_device())
    examples = load_examples(ray.train.get_dataset_shard("eval").iter_rows())
    general = load_examples(ray.train.get_dataset_shard("general").iter_rows()) if run.has_general else []
    task = EvalTask.from_config(config, run.labels)
    outcome = evaluate_split(model, tokenizer, examples, task, config.train.batch_size, rank, world_size, general)
    if rank != 0:  # identical outcome on every rank; rank 0 hands it over
        ray.train.report({})
        return
    payload: dict[str, Any] = {"metrics": outcome.metrics, "examples": len(examples)}
    if outcome.answers is not None:
        payload |= {"predictions": outcome.answers.predictions, "references": outcome.answers.references}
    # Train v2 returns only metrics attached to checkpoints, so the outcome travels as a one-file checkpoint.
    with tempfile.TemporaryDirectory(prefix="rayft-eval-") as directory:
        (Path(directory) / OUTCOME_FILE).write_text(json.dumps(payload))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(directory))


def run_evaluation(
    config: ExperimentConfig, settings: EvalSettings, datasets: dict[str, Any], split: str, model_name: str
) -> EvalReport:
    """Fit the eval-only TorchTrainer and turn rank 0's report into an EvalReport."""
    storage = config.run_dir / f".eval-{split}-{uuid.uuid4().hex[:8]}"  # where training's checkpoints go; removed after
    try:
        result = TorchTrainer(
            eval_loop_per_worker,
            train_loop_config=asdict(settings),
            scaling_config=worker_scaling(config.scaling),
            run_config=RunConfig(name="outcome", storage_path=str(storage)),
            datasets=datasets,
            dataset_config=DataConfig(datasets_to_split=[]),  # every rank takes its own stride, as in training
        ).fit()
        if result.error is not None:
            raise EvaluationFailed(f"evaluation failed: {result.error}") from result.error
        assert result.checkpoint is not None, "rank 0 reports the outcome with a checkpoint"
        with result.checkpoint.as_directory() as directory:
            payload = json.loads((Path(directory) / OUTCOME_FILE).read_text())
    except EvaluationFailed:
        raise
    except Exception as err:
        raise EvaluationFailed(f"evaluation failed: {err}") from err
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    predictions, references = payload.get("predictions"), payload.get("references")
    confusion = None
    if settings.labels is not None and predictions is not None:
        names, matrix = label_confusion(predictions, [refs[0] for refs in references], settings.labels)
        confusion = {"labels": names, "matrix": matrix}
    samples = [{"prediction": p, "references": r} for p, r in zip(predictions or [], references or [])][:SAMPLES]
    return EvalReport(split, model_name, payload.get("examples", 0), payload.get("metrics", {}), confusion, samples)


def resolve_checkpoint(run_dir: Path, checkpoint: str) -> Path:
    """'best' or 'last' from the run's result.json, or a checkpoint directory (or its model/ folder)."""
    if checkpoint in {"best", "last"}:
        result_file = run_dir / RESULT_FILE
        if not result_file.is_file():
            raise UserInputError(
                f"--checkpoint {checkpoint}: {run_dir} holds no finished run (no {RESULT_FILE}); train it first or give a checkpoint path"
            )
        path = json.loads(result_file.read_text()).get(f"{checkpoint}_checkpoint")
        if not path:
            raise UserInputError(f"--checkpoint {checkpoint}: {result_file} names no {checkpoint} checkpoint")
        return checkpoint_model_dir(Path(path))
    return checkpoint_model_dir(Path(checkpoint).expanduser().resolve())


def checkpoint_model_dir(path: Path) -> Path:
    """The model/ folder of a complete rayft checkpoint, or a saved model directory as it is.

    A checkpoint's own model/ folder is checked through its parent's marker: a save that crashed
    midway writes model/ first, so taking the folder alone would let a partial checkpoint in.
    """
    if path.name == MODEL_DIR and _inside_checkpoint(path.parent):
        path = path.parent
    if (path / MODEL_DIR).is_dir():
        try:
            read_marker(path)
        except IncompleteCheckpointError as err:
            raise UserInputError(f"--checkpoint: {err}") from None
        return path / MODEL_DIR
    if path.is_dir() and any(path.glob("*.safetensors")):  # e.g. `rayft export`'s output
        return path
    raise UserInputError(f"--checkpoint: {str(path)!r} is not a rayft checkpoint (no {MODEL_DIR}/) nor a saved model directory")


def _inside_checkpoint(directory: Path) -> bool:
    """Whether `directory` is (or was meant to become) a rayft checkpoint: Ray names them
    checkpoint_*, and save_trainer_state/write_marker put their files next to model/."""
    return directory.name.startswith("checkpoint_") or any((directory / name).exists() for name in (MARKER_FILE, STATE_FILE))


def general_dataset(config: ExperimentConfig, rows: list[dict[str, Any]], tokenizer_path: str) -> Any | None:
    """The forgetting monitor's general set (rows from read_general) tokenized, or None without one."""
    general_data = general_data_config(config)
    return tokenize_rows(rows, general_data, tokenizer_path) if rows and general_data is not None else None


def evaluate(
    config: ExperimentConfig,
    checkpoint: str | None = "best",
    split: str = VAL,
    address: str | None = None,
) -> EvalReport:
    """Evaluate a checkpoint ('best', 'last' or a path; None: the base model) on a split of the run
    the config names; writes eval_<split>.json/.md (and the confusion matrix) into its run directory."""
    run_dir = config.run_dir
    if split not in {VAL, TEST, TRAIN}:
        raise UserInputError(f"--split: {split!r} is not one of {VAL}, {TEST}, {TRAIN}")
    if (split == TEST and config.data.split.test == 0) or (split == VAL and not config.has_validation):
        key = "data.split.test" if split == TEST else "data.split.val"
        raise UserInputError(f"--split {split}: the config gives this run no {split} rows ({key})")
    model_dir = None if checkpoint is None else resolve_checkpoint(run_dir, checkpoint)
    check_data_paths(config.data)
    general_rows = read_general(config, run_dir)
    base_model = resolve_base_model(config.model, run_dir)
    tokenizer_path = tokenizer_source(config.model, base_model)
    ensure_ray(address, config.scaling.num_workers * config.scaling.cpus_per_worker + 1)
    with tempfile.TemporaryDirectory() as scratch:  # the run's quarantine and summary files stay as training wrote them
        prepared = prepare_datasets(config, tokenizer_path, Path(scratch))
    if split not in prepared.datasets:
        raise UserInputError(f"--split {split}: no {split} rows are left after filtering (see the run's data_summary.json)")
    datasets = {"eval": prepared.datasets[split]}
    general = general_dataset(config, general_rows, tokenizer_path)
    if general is not None:
        datasets["general"] = general
    labels = prepared.labels
    settings = EvalSettings(
        experiment=config.model_dump(mode="json"), base_model=base_model, tokenizer=tokenizer_path,
        model_dir=None if model_dir is None else str(model_dir), labels=labels, has_general="general" in datasets,
    )
    name = "base" if model_dir is None else str(model_dir.parent if model_dir.name == MODEL_DIR else model_dir)
    report = run_evaluation(config, settings, datasets, split, name)
    return write_eval_report(report, run_dir, base=model_dir is None)
