"""The per-worker training loop: every step that happens on a Ray Train worker, in order.

Read top to bottom: set up (model, method, data, optimizer, scheduler), restore from a
checkpoint if Ray hands one over, evaluate once before training, then loop
forward/backward/step with periodic logging, evaluation and checkpointing.
Host syncs (`.item()`) happen only at logging, evaluation and save steps.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from ray.experimental import tqdm_ray

from rayft.config import ExperimentConfig, TrainConfig
from rayft.data.batching import Example, collate, epoch_batches, load_examples, micro_batches_per_epoch
from rayft.data.classification import collate_classification
from rayft.data.packing import pack_examples
from rayft.data.tokenize import IGNORE_INDEX
from rayft.evaluate.classification import majority_accuracy
from rayft.evaluate.early_stopping import EarlyStopping
from rayft.evaluate.validation import EvalTask, evaluate_split
from rayft.models.loading import enable_gradient_checkpointing, load_tokenizer, load_with_head
from rayft.models.methods import MethodContext, apply_method, count_parameters
from rayft.tracking.metrics_log import METRICS_FILE, MetricsLog
from rayft.training.checkpoint import Progress, read_marker, rng_state
from rayft.training.classification import classification_forward_backward
from rayft.training.engines import Engine, create_engine

logger = logging.getLogger("rayft.train")

FAIL_AT_STEP_ENV = "RAYFT_FAIL_AT_STEP"
"""Fault injection (read by the driver): rank 0 raises after this optimizer step on a fresh start,
so tests can prove that a restarted run resumes exactly."""


NON_FINITE_LOSS = "non-finite loss"


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or inf: deterministic, so never worth a retry."""


@dataclass(frozen=True)
class LoopSettings:
    """What the driver resolved for the workers (paths that exist, the run directory)."""

    experiment: dict[str, Any]
    base_model: str
    tokenizer: str
    run_dir: str
    has_validation: bool
    fail_at_step: int = 0
    labels: list[str] | None = None
    """Classification label set: the labels scored after the prompt (causal LM), or the head's outputs in id order."""
    has_general: bool = False
    """A general held-out set (eval.general) is passed as dataset 'general' (forgetting monitor)."""
    deepspeed_config: dict[str, Any] | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def total_steps(train: TrainConfig, steps_per_epoch: int) -> int:
    if train.max_steps is not None:
        return train.max_steps
    return max(1, math.ceil(train.epochs * steps_per_epoch))


def forward_backward(engine: Engine, micro_batches: list[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Accumulate the gradients of one optimizer step; returns its (detached) mean token loss.

    transformers divides each micro-batch's summed token loss by the trained tokens of the whole
    step (`num_items_in_batch`), so accumulation weighs every token equally, like one big batch.
    Tokens are counted on the host before the copy to the device: no device sync per step.
    Under DDP, gradients are all-reduced once, on the last micro-batch.
    """
    step_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    total = torch.zeros((), device=device)
    for index, batch in enumerate(micro_batches):
        with engine.accumulating(last=index == len(micro_batches) - 1):
            on_device = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with engine.autocast():
                loss = engine.model(**on_device, num_items_in_batch=step_tokens, use_cache=False).loss
            engine.backward(loss)
        total += loss.detach().float()
    return total


def _gather_rng_states() -> list[dict[str, Any]]:
    local = rng_state()
    if not dist.is_initialized():
        return [local]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, local)
    return states


def _report(metrics: dict[str, Any], save: bool, engine: Engine, tokenizer: Any, progress: Progress) -> None:
    """Report to Ray Train on every rank (same count everywhere); each rank that wrote part of
    the checkpoint (rank 0; every rank under DeepSpeed) attaches it, into one shared directory."""
    if not save:
        ray.train.report(metrics)
        return
    rng_states = _gather_rng_states()  # collective: every rank takes part
    directory = Path(tempfile.mkdtemp(prefix="rayft-ckpt-"))
    try:
        wrote = engine.save(directory, tokenizer, progress, rng_states, metrics)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)) if wrote else None)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _quiet_report_logging() -> None:
    """Ray Train logs every report at INFO under a file-path logger name; our metrics log says it already."""
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(settings: dict[str, Any]) -> None:
    loop = LoopSettings(**settings)
    config = ExperimentConfig.model_validate(loop.experiment)
    train_cfg = config.train
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if not config.scaling.use_gpu:
        torch.set_num_threads(max(1, int(config.scaling.cpus_per_worker)))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _quiet_report_logging()

    # ---- model and method (same seed on every rank: identical adapter init)
    seed_everything(train_cfg.seed)
    classify = config.model.head == "sequence_classification"  # a head and label ids instead of answer tokens
    tokenizer = load_tokenizer(loop.tokenizer, need_eos=not classify)
    model = load_with_head(config.model, loop.base_model, loop.labels, tokenizer.pad_token_id)
    if train_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model = apply_method(model, config.method, MethodContext.for_head(classify, loop.tokenizer))
    batch_of = collate_classification if classify else collate
    step_of = classification_forward_backward if classify else forward_backward
    trainable_params, total_params = count_parameters(model)
    if rank == 0:
        logger.info(
            "method %s: %s trainable of %s parameters (%.2f%%)",
            config.method.type, f"{trainable_params:,}", f"{total_params:,}", 100 * trainable_params / total_params,
        )

    # ---- data: every rank holds the tokenized splits and takes its stride of each epoch
    train_examples = load_examples(ray.train.get_dataset_shard("train").iter_rows())
    val_examples: list[Example] = (
        load_examples(ray.train.get_dataset_shard("validation").iter_rows()) if loop.has_validation else []
    )
    general_examples = load_examples(ray.train.get_dataset_shard("general").iter_rows()) if loop.has_general else []
    packing_stats = None
    if config.data.packing:
        train_examples, packing_stats = pack_examples(train_examples, config.data.max_length)
    micro_per_epoch = micro_batches_per_epoch(len(train_examples), train_cfg.batch_size, world_size)
    steps_per_epoch = math.ceil(micro_per_epoch / train_cfg.grad_accum)
    max_steps = total_steps(train_cfg, steps_per_epoch)

    # ---- engine: torch DDP or DeepSpeed ZeRO, with optimizer, schedule and precision (engines.py)
    engine = create_engine(config, model, max_steps, loop.deepspeed_config)
    model, device = engine.model, engine.device

    # ---- resume
    progress = Progress()
    checkpoint = ray.train.get_checkpoint()
    checkpoint_metrics: dict[str, Any] = {}
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            progress = engine.restore(Path(directory), rank, world_size)
            checkpoint_metrics = read_marker(Path(directory))["metrics"]
        logger.info("rank %d resumed at step %d (epoch %d, micro-batch %d)", rank, progress.step, progress.epoch, progress.micro_batch)
    else:
        seed_everything(train_cfg.seed + rank)  # distinct dropout noise per rank
    fail_at = loop.fail_at_step if checkpoint is None else 0
    stopping = train_cfg.early_stopping
    stopper = None if stopping is None else (
        EarlyStopping.from_state(progress.early_stopping) if progress.early_stopping
        else EarlyStopping(stopping.metric, stopping.mode, stopping.patience, stopping.min_delta)
    )
    log = MetricsLog(Path(loop.run_dir) / METRICS_FILE) if rank == 0 else None
    if log is not None:
        log.truncate_after(progress.step)
    if checkpoint is not None and (progress.step >= max_steps or (stopper is not None and stopper.stopped_step is not None)):
        # The run had already ended (its last checkpoint is the final state) when its driver died,
        # before Ray recorded the end. Train no further; report the final metrics once more so the
        # caller, a Tune trial above all, gets its result (a run with no report has none).
        _report(checkpoint_metrics, False, engine, None, progress)
        return

    eval_task = EvalTask.from_config(config, loop.labels)

    def evaluate() -> dict[str, float]:
        return evaluate_split(model, tokenizer, val_examples, eval_task, train_cfg.batch_size, rank, world_size, general_examples).metrics

    def record(metrics: dict[str, Any]) -> None:
        if log is not None:
            log.write({"step": progress.step, "epoch": round(progress.step / steps_per_epoch, 4), **metrics, "time": time.time()})

    if progress.step == 0:
        start_metrics: dict[str, Any] = {"trainable_params": trainable_params, "total_params": total_params, "max_steps": max_steps}
        if packing_stats is not None:
            start_metrics |= {"packed_sequences": packing_stats.sequences, "packing_efficiency": round(packing_stats.efficiency, 4)}
        if val_examples:
            start_metrics |= evaluate()
            if classify:
                start_metrics["majority_accuracy"] = majority_accuracy(train_examples, val_examples)
        record(start_metrics)
        _report({"step": 0, **start_metrics}, False, engine, tokenizer, progress)

    # ---- the loop
    bar = tqdm_ray.tqdm(total=max_steps, desc=f"{config.name} steps") if rank == 0 else None
    if bar is not None:
        bar.update(progress.step)
    model.train()
    running_loss = torch.zeros((), device=device)
    window_tokens, window_steps, window_start = 0, 0, time.perf_counter()
    last_eval: dict[str, float] = {}
    stop = False
    while progress.step < max_steps and not stop:
        epoch = progress.epoch
        batches = epoch_batches(len(train_examples), train_cfg.batch_size, world_size, rank, train_cfg.seed, epoch)
        # Until the epoch rolls over: the next epoch takes its own permutation (a resumed run computes it too)
        while progress.epoch == epoch and progress.step < max_steps and not stop:
            group = batches[progress.micro_batch : progress.micro_batch + train_cfg.grad_accum]
            collated = [batch_of([train_examples[i] for i in ids], tokenizer.pad_token_id) for ids in group]
            window_tokens += sum(len(train_examples[i].input_ids) for ids in group for i in ids)
            running_loss += step_of(engine, collated, device)
            engine.clip(train_cfg.max_grad_norm)
            engine.step()  # optimizer, then schedule
            engine.zero_grad()
            progress.step += 1
            progress.micro_batch += len(group)
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if progress.micro_batch >= len(batches):
                progress.epoch, progress.micro_batch = progress.epoch + 1, 0

            if progress.step % train_cfg.logging_steps == 0 or progress.step == max_steps:
                elapsed = time.perf_counter() - window_start
                window_loss = running_loss.item() / window_steps
                if not math.isfinite(window_loss):
                    raise NonFiniteLoss(f"{NON_FINITE_LOSS}: training loss is {window_loss} by step {progress.step}; lower train.lr or check the data")
                record({
                    "loss": window_loss,
                    "lr": engine.lr(),
                    "tokens_per_s": window_tokens * world_size / max(elapsed, 1e-9),
                })
                running_loss.zero_()
                window_tokens, window_steps, window_start = 0, 0, time.perf_counter()

            final = progress.step == max_steps
            save = final or (train_cfg.save_steps is not None and progress.step % train_cfg.save_steps == 0)
            do_eval = bool(val_examples) and (
                save or (train_cfg.eval_steps is not None and progress.step % train_cfg.eval_steps == 0)
            )
            if do_eval:
                last_eval = evaluate()
                record(last_eval)
            if do_eval and stopper is not None:  # same values on every rank: every rank stops here
                stop = stopper.update(progress.step, last_eval)
                progress.early_stopping = stopper.state_dict()
                save = save or stop  # the state training stopped in is kept
            if do_eval or save:
                _report({"step": progress.step, "epoch": round(progress.step / steps_per_epoch, 4), **last_eval}, save, engine, tokenizer, progress)
            if stop and stopper is not None:
                record({"stop_reason": "early_stopping", "early_stopping": stopper.state_dict()})
            if fail_at and progress.step == fail_at and rank == 0:
                raise RuntimeError(f"{FAIL_AT_STEP_ENV}={fail_at}: injected failure after step {fail_at}")
    if bar is not None:
        bar.close()

