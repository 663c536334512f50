"""Memory per worker under torch DDP and DeepSpeed ZeRO 0, 2 and 3: 2 Ray Train workers, same model.

    .venv/bin/python benchmarks/zero_memory.py [--layers 6 --hidden 768 --heads 12 --steps 3 --engines torch,0,2,3] [--tiny]

Each engine trains the same seeded tiny llama (full fine-tuning, fp32, AdamW) for a few steps on
the same random batches through rayft's own engines (engines.py) and `forward_backward`. Every
worker reports:
  - peak RSS: the process's high-water mark (VmHWM, the kernel's own peak; sampling with psutil
    would miss short peaks) and RSS before the model was loaded (the Python, torch, Ray and DeepSpeed
    baseline), so peak - baseline is what the training added;
  - bytes this rank holds, counted tensor by tensor after the last backward (before the step
    frees gradients): parameters (its ZeRO-3 slice or the whole model), gradients (full .grad
    tensors or DeepSpeed's gradient partitions) and optimizer state (AdamW moments plus any fp32
    master partition DeepSpeed keeps apart from the module's own weights).
Prints a markdown table for benchmarks/RESULTS.md and writes JSON next to it with --out.
`--tiny` (2 layers, width 64, 2 steps of 1 x 16 tokens) checks in a minute that every engine runs; its
numbers measure nothing but the interpreter.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from rayft.training.loopback import keep_embedded_ray_on_loopback

keep_embedded_ray_on_loopback()

import ray.train  # noqa: E402  (after the loopback setting, which must precede Ray's import)
from ray.train import RunConfig, ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from rayft.config import ExperimentConfig, config_from_dict  # noqa: E402
from rayft.data.batching import Example, collate  # noqa: E402
from rayft.models.loading import load_causal_lm, resolve_base_model  # noqa: E402
from rayft.training.cluster import ensure_ray  # noqa: E402
from rayft.training.deepspeed_config import build_deepspeed_config  # noqa: E402
from rayft.training.engines import DeepSpeedEngine, Engine, create_engine  # noqa: E402
from rayft.training.loop import forward_backward  # noqa: E402

MIB = 2**20


def experiment(engine: str, args: argparse.Namespace, storage: Path) -> dict[str, Any]:
    train: dict[str, Any] = {"max_steps": args.steps, "lr": 1e-4, "batch_size": args.batch_size, "weight_decay": 0.01}
    if engine != "torch":
        train |= {"backend": "deepspeed", "deepspeed": {"stage": int(engine.removesuffix("ds")), "config": args.ds_json}}
    return {
        "name": f"zero-memory-{engine}",  # one run directory per engine
        "model": {"tiny": {"arch": "llama", "layers": args.layers, "hidden": args.hidden, "heads": args.heads, "max_position": 512}},
        "method": {"type": "full"},
        "data": {"train": "unused.jsonl"},
        "train": train,
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        "run": {"storage_path": str(storage)},
    }


def _peak_rss() -> int:
    """VmHWM: the kernel's record of this process's largest resident set."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _reset_peak_rss() -> None:
    """Start a new VmHWM period (Linux: writing 5 to clear_refs resets the high-water mark)."""
    Path("/proc/self/clear_refs").write_text("5")


def _nbytes(tensors: Any) -> int:
    """Bytes of distinct storage behind `tensors` (views of one flat buffer are counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.numel():
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    while not isinstance(optimizer, torch.optim.Optimizer) or hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer  # DeepSpeed's ZeRO optimizers wrap the client's AdamW
    return optimizer


def rank_bytes(engine: Engine) -> dict[str, int]:
    module = engine.unwrapped
    params = list(module.parameters())
    held = [getattr(p, "ds_tensor", p) for p in params]  # ZeRO-3: this rank's slice
    grads = [p.grad for p in params]
    inner = _torch_optimizer(engine.optimizer)
    masters = [p for group in inner.param_groups for p in group["params"]]
    state = [t for s in inner.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.ndim]
    if isinstance(engine, DeepSpeedEngine):
        zero = engine.optimizer
        # ZeRO 1-2: reduced gradient partitions at the step (averaged_gradients) or, in DeepSpeed 0.19, held
        # between backward and step as per-group tensor lists (all_grad_tensors; counted 0 MiB without it)
        for holder in ("averaged_gradients", "all_grad_tensors"):
            partitions = getattr(zero, holder, None) or {}
            grads += [t for value in partitions.values() for t in (value if isinstance(value, list) else [value])]
        grads.append(getattr(zero, "grads_in_partition", None))  # ZeRO-2 between backward and step
        grads.append(getattr(zero, "grad_partitions_flat_buffer", None))  # ZeRO-3
    module_storage = {p.untyped_storage().data_ptr() for p in held if p.numel()}
    separate_masters = [m for m in masters if m.untyped_storage().data_ptr() not in module_storage]
    return {"params": _nbytes(held), "grads": _nbytes(grads), "optimizer": _nbytes(state) + _nbytes(separate_masters)}


def worker(settings: dict[str, Any]) -> None:
    """One Ray Train worker: rayft's engine for this experiment, then `train_and_count`."""
    baseline = psutil.Process().memory_info().rss
    torch.set_num_threads(1)
    config = ExperimentConfig.model_validate(settings["experiment"])
    torch.manual_seed(0)
    model = load_causal_lm(settings["base_model"])
    engine = create_engine(config, model, config.train.max_steps, settings["deepspeed_config"])
    rank = ray.train.get_context().get_world_rank()
    row = train_and_count(engine, config, settings["seq_len"], rank, baseline)
    # Ray Train hands the driver rank 0's metrics only; every worker of this one-machine benchmark writes its own.
    (Path(settings["out_dir"]) / f"rank{rank}.json").write_text(json.dumps(row))
    ray.train.report({})


def train_and_count(engine: Engine, config: ExperimentConfig, seq_len: int, rank: int, baseline: int) -> dict[str, Any]:
    """Run the configured steps on random batches as rayft's loop does and return this rank's row
    (kept apart from `worker` so that it runs, and is checked, without Ray)."""
    gc.collect()
    setup_peak = _peak_rss()  # loading the whole model on every rank, then the engine's buffers and shards
    _reset_peak_rss()
    generator = torch.Generator().manual_seed(rank)
    counted: dict[str, int] = {}
    started = time.perf_counter()
    for step in range(config.train.max_steps):
        ids = torch.randint(3, 380, (config.train.batch_size, seq_len), generator=generator).tolist()
        batch = collate([Example(row, row, 0, "") for row in ids], 0)
        forward_backward(engine, [batch], engine.device)
        if step == config.train.max_steps - 1:
            counted = rank_bytes(engine)
        engine.clip(config.train.max_grad_norm)
        engine.step()
        engine.zero_grad()
    assert config.train.max_steps is not None
    return {"rank": rank, "baseline_rss": baseline, "setup_peak_rss": setup_peak, "train_peak_rss": _peak_rss(), **counted,
            "s_per_step": (time.perf_counter() - started) / config.train.max_steps}


def measure(engine: str, args: argparse.Namespace, storage: Path) -> list[dict[str, Any]]:
    config: ExperimentConfig = config_from_dict(experiment(engine, args, storage))
    base_model = resolve_base_model(config.model, storage / "shared")  # one model, built once
    out_dir = storage / f"{config.name}-ranks"
    out_dir.mkdir()
    settings = {
        "experiment": config.model_dump(mode="json"),
        "base_model": base_model,
        # "3ds": DeepSpeed's own bucket sizes instead of rayft's, sized to the model's width
        "deepspeed_config": build_deepspeed_config(config, None if engine.endswith("ds") else args.hidden) if engine != "torch" else None,
        "seq_len": args.seq_len,
        "out_dir": str(out_dir),
    }
    TorchTrainer(
        worker,
        train_loop_config=settings,
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=config.name, storage_path=str(storage)),
    ).fit()
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob("rank*.json"))]


TINY = {"layers": 2, "hidden": 64, "heads": 4, "steps": 2, "batch_size": 1, "seq_len": 16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--engines", default="torch,0,2,3,3ds", help="comma-separated: torch, ZeRO stages 0-3; suffix ds: DeepSpeed's bucket sizes")
    parser.add_argument("--ds-json", default=None, help="a DeepSpeed JSON merged into rayft's (train.deepspeed.config)")
    parser.add_argument("--tiny", action="store_true", help=f"smoke run, overriding the sizes: {TINY}")
    parser.add_argument("--out", type=Path, default=None, help="write the measurements as JSON here")
    args = parser.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ensure_ray(None, 3)
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="rayft-zero-memory-") as tmp:
        for engine in args.engines.split(","):
            results[engine] = measure(engine, args, Path(tmp))
    print(render(results, args))
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2) + "\n")


def render(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        f"machine: {platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"llama {args.layers} layers x {args.hidden}, batch {args.batch_size} x {args.seq_len} tokens per worker, fp32, AdamW",
        "",
        "| engine | rank | params MiB | grads MiB | optimizer MiB | sum MiB | baseline RSS MiB | setup peak RSS MiB | training peak RSS MiB | s/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, rows in results.items():
        name = "torch DDP" if engine == "torch" else f"DeepSpeed ZeRO-{engine.removesuffix('ds')}" + (", DeepSpeed's buckets" if engine.endswith("ds") else "")
        for row in sorted(rows, key=lambda r: r["rank"]):
            total = row["params"] + row["grads"] + row["optimizer"]
            lines.append(
                f"| {name} | {row['rank']} | {row['params'] / MIB:.1f} | {row['grads'] / MIB:.1f} | {row['optimizer'] / MIB:.1f} | "
                f"{total / MIB:.1f} | {row['baseline_rss'] / MIB:.0f} | {row['setup_peak_rss'] / MIB:.0f} | "
                f"{row['train_peak_rss'] / MIB:.0f} | {row['s_per_step']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
