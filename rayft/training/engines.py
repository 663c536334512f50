"""Training engines: how a step's backward, clipping, optimizer step and checkpoint happen.

The loop (loop.py) calls the same few methods on either engine, so reading it tells every step
whichever engine runs:

    with engine.accumulating(last):          # torch DDP: no all-reduce before the step's last micro-batch
        with engine.autocast():              # torch: bf16/fp16 autocast; DeepSpeed casts weights itself
            loss = engine.model(**batch).loss
        engine.backward(loss)
    engine.clip(max_norm); engine.step(); engine.zero_grad()

Both engines use the same AdamW (same weight-decay groups) and the same transformers schedule,
and both weigh every trained token of a step equally (the loss is divided by the step's token
count, never again by the number of micro-batches).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, ContextManager

import torch
import torch.distributed as dist
from torch import nn
from transformers import PreTrainedTokenizerBase, get_scheduler

from rayft.config import ExperimentConfig, TrainConfig, total_warmup_steps
from rayft.training.checkpoint import (
    IncompleteCheckpointError,
    Progress,
    check_marker,
    list_files,
    load_trainer_state,
    restore_checkpoint,
    save_checkpoint,
    save_model,
    save_trainer_state,
    write_marker,
)
from rayft.training.deepspeed_config import with_precision

logger = logging.getLogger("rayft.train")

DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; biases and 1-d weights (norms) get no weight decay."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=train.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, max_steps: int) -> Any:
    return get_scheduler(
        train.scheduler, optimizer, num_warmup_steps=total_warmup_steps(train, max_steps), num_training_steps=max_steps
    )


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision this device can train in: `requested`, or fp32 with a warning.

    bf16 runs on CPUs (torch autocast and DeepSpeed both support it) and on GPUs that have it;
    fp16 needs a GPU (loss scaling and fp16 kernels are GPU features; on CPU it would be slower
    than fp32 and gain nothing).
    """
    if requested == "fp16" and device.type != "cuda":
        reason = f"fp16 needs a GPU (this worker trains on {device.type})"
    elif requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        reason = f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16"
    else:
        return requested
    logger.warning("train.precision=%s: %s; training in fp32 instead", requested, reason)
    return "fp32"


class Engine(ABC):
    """One worker's side of data-parallel training."""

    model: nn.Module  # what the forward pass runs through (DDP- or DeepSpeed-wrapped)
    device: torch.device
    precision: str

    @property
    def unwrapped(self) -> nn.Module:
        """The Hugging Face (or peft) model itself, for evaluation, generation and export."""
        return getattr(self.model, "module", self.model)

    def accumulating(self, last: bool) -> ContextManager[Any]:
        """Around one micro-batch's forward and backward; `last` ends the optimizer step."""
        return nullcontext()

    def autocast(self) -> ContextManager[Any]:
        """Around the forward pass only."""
        return nullcontext()

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def clip(self, max_norm: float | None) -> None: ...

    @abstractmethod
    def step(self) -> None:
        """Optimizer step, then the schedule's step."""

    @abstractmethod
    def zero_grad(self) -> None: ...

    @abstractmethod
    def lr(self) -> float: ...

    @abstractmethod
    def save(
        self,
        directory: Path,
        tokenizer: PreTrainedTokenizerBase,
        progress: Progress,
        rank_rng_states: list[dict[str, Any]],
        metrics: dict[str, Any],
    ) -> bool:
        """Write this rank's part of a checkpoint into `directory` (called on every rank);
        returns whether this rank wrote files (and so reports the directory)."""

    @abstractmethod
    def restore(self, directory: Path, rank: int, world_size: int) -> Progress: ...


class TorchDDPEngine(Engine):
    """torch DDP (or a plain module on one worker), AdamW, optional autocast and GradScaler."""

    def __init__(self, model: nn.Module, train: TrainConfig, max_steps: int, device: torch.device, precision: str) -> None:
        self.model, self.device, self.precision = model, device, precision
        self.optimizer = build_optimizer(model, train)
        self.scheduler = build_scheduler(self.optimizer, train, max_steps)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def accumulating(self, last: bool) -> ContextManager[Any]:
        no_sync = getattr(self.model, "no_sync", None)
        return nullcontext() if last or no_sync is None else no_sync()

    def autocast(self) -> ContextManager[Any]:
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def clip(self, max_norm: float | None) -> None:
        if max_norm is None:
            return
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def step(self) -> None:
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        self.scheduler.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory, tokenizer, progress, rank_rng_states, metrics) -> bool:
        """Every rank holds the same weights and optimizer state: rank 0 writes them all."""
        if _rank() != 0:
            return False
        save_checkpoint(directory, self.unwrapped, tokenizer, self.optimizer, self.scheduler, progress, rank_rng_states, metrics, self.scaler)
        return True

    def restore(self, directory: Path, rank: int, world_size: int) -> Progress:
        return restore_checkpoint(directory, self.unwrapped, self.optimizer, self.scheduler, rank, world_size, self.scaler)


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO stage 0-3 on Ray Train's process group (gloo on CPU, NCCL on GPU).

    rayft's AdamW and schedule are handed to `deepspeed.initialize`; the config comes from
    deepspeed_config.py (built in the driver). DeepSpeed clips inside `step` (its
    `gradient_clipping`) and, with `managed_gradient_accumulation: false`, treats every `step`
    as the end of an accumulation, so rayft decides where steps end.
    """

    def __init__(
        self, model: nn.Module, train: TrainConfig, max_steps: int, ds_config: dict[str, Any], device: torch.device, precision: str
    ) -> None:
        import deepspeed
        from transformers.integrations import HfDeepSpeedConfig

        self.device, self.precision = device, precision
        # DeepSpeed compiles a shared-memory all-reduce for CPU inference (about a minute on first use);
        # training never calls it. DeepSpeed caches its op table as one module-level dict, so the edit holds.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.config = with_precision(ds_config, precision)
        self.stage = int(self.config["zero_optimization"]["stage"])
        # Alive while the engine is: transformers then knows ZeRO-3 shards the weights, and generate()
        # keeps all ranks stepping together (each rank's forward gathers weights from the others).
        self._hf_deepspeed = HfDeepSpeedConfig(self.config) if self.stage == 3 else None
        # Methods that train part of the model (peft, bottleneck adapters): the frozen base comes from
        # the base model on resume; only trained weights are state.
        self.partial = any(not p.requires_grad for p in model.parameters())
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=build_optimizer(model, train),
            lr_scheduler=partial(build_scheduler, train=train, max_steps=max_steps),
            config=self.config,
            dist_init_required=False,
        )

    def backward(self, loss: torch.Tensor) -> None:
        # The loss is already divided by the step's trained tokens (num_items_in_batch):
        # DeepSpeed must not divide it again by gradient_accumulation_steps.
        self.model.backward(loss, scale_wrt_gas=False)

    def clip(self, max_norm: float | None) -> None:
        """Nothing to do here: DeepSpeed clips in `step` (gradient_clipping = train.max_grad_norm)."""

    def step(self) -> None:
        self.model.step()  # reduce (stage 0-1), clip, optimizer step, schedule step, clear gradients

    def zero_grad(self) -> None:
        self.model.zero_grad()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory, tokenizer, progress, rank_rng_states, metrics) -> bool:
        """Each rank writes its shard of the DeepSpeed state; rank 0 writes the Hugging Face
        export (gathered from every rank under ZeRO-3), the trainer state and, last, the marker,
        which lists every rank's files so that a partly uploaded checkpoint is never used."""
        rank = _rank()
        self.model.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, exclude_frozen_parameters=self.partial)
        # Under ZeRO-3 every rank holds a slice of each weight: gather them (a collective, every rank
        # takes part) into one state dict on rank 0. DeepSpeed's own export helper, also used by
        # accelerate and the transformers Trainer; "16bit" in its name only means "in the training dtype".
        state_dict = self.model._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=self.partial) if self.stage == 3 else None
        if rank == 0:
            save_model(directory, self.unwrapped, tokenizer, state_dict)
            save_trainer_state(directory, progress, rank_rng_states, {"engine": "deepspeed"})
        files: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(files, list_files(directory))
        if rank == 0:
            write_marker(directory, progress.step, len(rank_rng_states), metrics, {k: v for rank_files in files for k, v in rank_files.items()})
        return bool(files[rank])

    def restore(self, directory: Path, rank: int, world_size: int) -> Progress:
        check_marker(directory, world_size)
        loaded, _ = self.model.load_checkpoint(
            str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, load_module_strict=not self.partial
        )
        if loaded is None:
            raise IncompleteCheckpointError(f"{directory / DEEPSPEED_DIR}: DeepSpeed found no state to load")
        return load_trainer_state(directory, rank)


def create_engine(config: ExperimentConfig, model: nn.Module, max_steps: int, ds_config: dict[str, Any] | None) -> Engine:
    """The configured engine for this Ray Train worker (call after the model and method are built)."""
    import ray.train.torch

    device = ray.train.torch.get_device()
    precision = resolve_precision(config.train.precision, device)
    if _rank() == 0:
        zero = f" ZeRO-{config.train.deepspeed.stage}" if config.train.deepspeed is not None else ""
        logger.info("engine: %s%s, precision %s, on %s", config.train.backend, zero, precision, device.type)
    if config.train.backend == "deepspeed":
        assert ds_config is not None, "the driver builds the DeepSpeed config"
        return DeepSpeedEngine(model.to(device), config.train, max_steps, ds_config, device, precision)
    return TorchDDPEngine(ray.train.torch.prepare_model(model), config.train, max_steps, device, precision)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0

