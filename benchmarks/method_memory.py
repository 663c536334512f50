"""Peak memory per data-parallel worker for each fine-tuning method, on one model where the
optimizer state dominates (fp32 AdamW: two moments per trained weight).

    .venv/bin/python benchmarks/method_memory.py [--methods full lora prefix adapter] [--steps 3] [--tiny]

For each method, two worker processes (torch DDP over gloo, as a Ray Train worker runs it: the
model wrapped by DistributedDataParallel) build the same seeded tiny llama, apply the method
with rayft's registry, and run optimizer steps through rayft's torch engine (TorchDDPEngine:
its AdamW, schedule and clipping) and the loop's `forward_backward` on fixed random batches,
step by step as the loop does (gradients set to None after each step). Each worker reports
  - the bytes it holds by construction: weights, gradients (after the last backward, before the
    step frees them), optimizer state (counted from tensors);
  - its peak resident memory (getrusage ru_maxrss) and the resident memory before the model was
    built (interpreter, torch and transformers), so the difference is what training added.
Ray's own worker runtime (~0.2 GB per worker) is not included: it is the same for every method.
Prints a Markdown table and checks the target: LoRA's peak at most half of full fine-tuning's.
`--tiny` swaps in a 2-layer width-64 model to check in seconds that the benchmark runs; its numbers
mean nothing (the interpreter dominates) and the target is not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from transformers import ByT5Tokenizer

from rayft.config import AdapterMethod, FullMethod, IA3Method, LoraMethod, PrefixMethod, PromptMethod, TinyModelSpec, TrainConfig
from rayft.data.batching import Example, collate
from rayft.models.loading import build_tiny_model
from rayft.models.methods import apply_method
from rayft.training.engines import TorchDDPEngine
from rayft.training.loop import forward_backward
from rayft.training.loopback import free_port

MODEL = TinyModelSpec(arch="llama", layers=12, hidden=1024, heads=16, intermediate=2816, max_position=512)
TINY = TinyModelSpec(arch="llama", layers=2, hidden=64, heads=4, intermediate=128, max_position=128)
METHODS = {
    "full": FullMethod(),
    "lora": LoraMethod(r=8, alpha=16, dropout=0.0, target_modules="all-linear"),
    "prefix": PrefixMethod(num_virtual_tokens=20),
    "adapter": AdapterMethod(size=64),
    "ia3": IA3Method(),
    "prompt": PromptMethod(num_virtual_tokens=20),
}
BATCH, LENGTH, WORLD = 2, 64, 2
MiB = 2**20


CPU = torch.device("cpu")


def _tensor_bytes(tensors: Iterable[object]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))



def _worker(rank: int, method: str, steps: int, port: int, out: str, spec: TinyModelSpec) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    before_model = psutil.Process().memory_info().rss
    torch.manual_seed(0)
    model = DistributedDataParallel(apply_method(build_tiny_model(spec, ByT5Tokenizer()), METHODS[method]))
    train = TrainConfig(lr=1e-4)
    engine = TorchDDPEngine(model, train, steps, CPU, "fp32")
    generator = torch.Generator().manual_seed(rank)
    grad_bytes = 0
    for step in range(steps):
        ids = torch.randint(3, 380, (BATCH, LENGTH), generator=generator).tolist()
        batch = collate([Example(row, row, 0, "") for row in ids], 0)
        forward_backward(engine, [batch], CPU)
        if step == steps - 1:  # the gradients exist only until zero_grad sets them to None
            grad_bytes = _tensor_bytes(p.grad for p in model.parameters())
        engine.clip(train.max_grad_norm)
        engine.step()
        engine.zero_grad()
    parameters = list(model.parameters())
    report = {
        "method": method,
        "rank": rank,
        "trainable": sum(p.numel() for p in parameters if p.requires_grad),
        "weights_bytes": _tensor_bytes(parameters),
        "grad_bytes": grad_bytes,
        "optimizer_bytes": _tensor_bytes(v for state in engine.optimizer.state.values() for v in state.values()),
        "rss_before_model": before_model,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    }
    dist.barrier()
    Path(out, f"{method}-{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def measure(method: str, steps: int, spec: TinyModelSpec = MODEL) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(method, steps, free_port(), out, spec), nprocs=WORLD, join=True)
        return [json.loads(Path(out, f"{method}-{rank}.json").read_text()) for rank in range(WORLD)]


def table(rows: list[dict]) -> str:
    lines = [
        "| method | trainable params | weights MiB | grads MiB | optimizer MiB | peak RSS MiB (max of 2 workers) | added by training MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['trainable']:,} | {row['weights_bytes'] / MiB:,.0f} | {row['grad_bytes'] / MiB:,.1f} | "
            f"{row['optimizer_bytes'] / MiB:,.1f} | {row['peak_rss'] / MiB:,.0f} | {(row['peak_rss'] - row['rss_before_model']) / MiB:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["full", "lora", "prefix", "adapter"], choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer width-64 model: checks that the benchmark runs, measures nothing")
    parser.add_argument("--json", default=None, help="also write the per-worker numbers here")
    args = parser.parse_args(argv)
    spec = TINY if args.tiny else MODEL
    rows = []
    for method in args.methods:
        workers = measure(method, args.steps, spec)
        worst = max(workers, key=lambda w: w["peak_rss"])
        rows.append(worst)
        print(f"{method}: peak RSS {worst['peak_rss'] / MiB:,.0f} MiB", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    peaks = {row["method"]: row["peak_rss"] for row in rows}
    if {"full", "lora"} <= set(peaks) and not args.tiny:
        ratio = peaks["lora"] / peaks["full"]
        print(f"\nLoRA / full peak memory per worker: {ratio:.3f} (target <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'})")
        return 0 if ratio <= 0.5 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
