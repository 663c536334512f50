"""Training throughput (tokens/s) and model FLOPs utilisation (MFU) of rayft's loop on one GPU, bf16,
for full fine-tuning and LoRA on a llama-style model built from a config (no download).

    .venv/bin/python benchmarks/gpu_throughput.py [--methods full lora] [--peak-tflops 989] [--json out.json]
    .venv/bin/python benchmarks/gpu_throughput.py --device cpu --tiny     # smoke run, seconds, no GPU

Each method trains the same seeded model through rayft's own parts: the method from rayft's registry,
the torch engine (TorchDDPEngine: rayft's AdamW, schedule, clipping and bf16 autocast over fp32 master
weights, the engine `train.precision: bf16` gives) and the loop's `forward_backward`, on batches made
by rayft's `collate` (built before the clock starts: the timing is the step, not the data). After
warm-up steps, the timed window is bracketed by `torch.cuda.synchronize()`; the loop itself syncs nowhere.

MFU, as the PaLM paper defines it (Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with
Pathways", arXiv:2204.02311, section 4.1 and appendix B): the model FLOPs per second achieved,
divided by the hardware's peak FLOPs per second. Model FLOPs are what the model needs per token,
whatever the implementation does: recomputation (gradient checkpointing) and padding are not
counted, so MFU compares set-ups honestly. Per trained token, with sequence length T, L layers,
hidden width H:

    full fine-tuning:  6·N + 12·L·H·T
    LoRA:              4·N_frozen + 6·N_adapter + 12·L·H·T

N counts the parameters that multiply activations: every parameter except the input embedding
table (a lookup, no multiply-adds); the output head is counted. 6·N is a forward matmul (2 FLOPs
per weight), the backward's gradient with respect to the activations (2) and with respect to the
weight (2). A frozen weight needs no weight gradient, but the backward still runs through it to
reach the adapters below: 2 + 2 = 4 FLOPs per frozen weight; the adapters' own weights train in
full, 6 each. 12·L·H·T is PaLM's attention term (QK^T and attention x V: 4·L·H·T forward, twice that
backward; they have no weights, so LoRA pays it in full too). Like PaLM, the causal mask's skipped
half is not discounted. Approximation: the first layer's input gradient is counted although
nothing below it trains.

Peak: `--peak-tflops`, else looked up from `torch.cuda.get_device_name()` in PEAK_BF16_TFLOPS
(dense bf16 tensor-core numbers from NVIDIA's data sheets, without sparsity; e.g. H100/H200 SXM
989, A100 312). Unknown GPUs and CPUs get no MFU unless `--peak-tflops` is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from rayft.config import FullMethod, LoraMethod, TrainConfig
from rayft.data.batching import Example, collate
from rayft.models.loading import enable_gradient_checkpointing
from rayft.models.methods import apply_method, count_parameters
from rayft.training.engines import TorchDDPEngine, resolve_precision
from rayft.training.loop import forward_backward

# First match wins: the more specific names come before the names they contain (H100 PCIe before H100, L40S before L4).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
FULL_SIZE = {"layers": 22, "hidden": 2048, "heads": 32, "kv_heads": 4, "intermediate": 5632, "vocab": 32000}  # TinyLlama-1.1B's shape
TINY_SIZE = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 4, "intermediate": 128, "vocab": 384}
TINY_RUN = {"batch_size": 2, "seq_len": 32, "steps": 3, "warmup": 1}
NO_GPU = "gpu_throughput: no CUDA GPU found (torch.cuda.is_available() is False); run it on a GPU machine, or smoke-test with --device cpu --tiny"


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class Result:
    method: str
    total_params: int
    trainable_params: int
    flop_params: int
    """Parameters that multiply activations (all but the input embedding table)."""
    adapter_params: int
    flops_per_token: int
    tokens: int
    seconds: float
    tokens_per_s: float
    achieved_tflops: float
    mfu: float | None
    peak_memory_gib: float | None
    last_loss: float


def peak_tflops_for(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU name, else None."""
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in device_name), None)


def flops_per_token(method: str, flop_params: int, adapter_params: int, shape: Shape, seq_len: int) -> int:
    """Model FLOPs per trained token (the formulas in the module docstring); `flop_params` includes the adapters."""
    attention = 12 * shape.layers * shape.hidden * seq_len
    if method == "full":
        return 6 * flop_params + attention
    return 4 * (flop_params - adapter_params) + 6 * adapter_params + attention


def build_model(shape: Shape, device: torch.device, attn: str, seq_len: int) -> PreTrainedModel:
    """A seeded random llama in fp32 (rayft's engines keep fp32 master weights), built on `device`."""
    config = AutoConfig.for_model(
        "llama",
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=max(4096, seq_len),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it trains: a 1B model's CPU init would take longer than the benchmark
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn)


def flop_parameter_count(model: nn.Module) -> int:
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding)


def _batches(shape: Shape, batch_size: int, seq_len: int, count: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Full-length random sequences, every position trained (labels = inputs), collated by rayft;
    pinned for the GPU, so that forward_backward's non-blocking copies overlap as in a Ray Train worker."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        rows = torch.randint(3, shape.vocab, (batch_size, seq_len), generator=generator).tolist()
        batch = collate([Example(row, row, 0, "") for row in rows], 0)
        batches.append({k: v.pin_memory() for k, v in batch.items()} if device.type == "cuda" else batch)
    return batches


def measure(method: str, shape: Shape, args: argparse.Namespace, device: torch.device, peak: float | None) -> Result:
    model = build_model(shape, device, args.attn, args.seq_len)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    spec = FullMethod() if method == "full" else LoraMethod(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0, target_modules="all-linear")
    model = apply_method(model, spec)
    flop_params = flop_parameter_count(model)  # with the adapters
    trainable, total = count_parameters(model)
    adapter = 0 if method == "full" else trainable
    steps = args.warmup + args.steps
    engine = TorchDDPEngine(model, TrainConfig(lr=1e-5, max_steps=steps), steps, device, resolve_precision("bf16", device))
    batches = _batches(shape, args.batch_size, args.seq_len, min(steps, 4), device)
    engine.model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = 0.0
    loss = torch.zeros(())
    for step in range(steps):
        if step == args.warmup:
            _sync(device)
            started = time.perf_counter()
        loss = forward_backward(engine, [batches[step % len(batches)]], device)
        engine.clip(1.0)
        engine.step()
        engine.zero_grad()
    _sync(device)
    seconds = time.perf_counter() - started
    tokens = args.steps * args.batch_size * args.seq_len
    per_token = flops_per_token(method, flop_params, adapter, shape, args.seq_len)
    achieved = per_token * tokens / seconds / 1e12
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Result(
        method, total, trainable, flop_params, adapter, per_token, tokens, seconds, tokens / seconds, achieved,
        achieved / peak if peak else None, memory, float(loss),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(results: list[Result], header: str) -> str:
    lines = [
        header,
        "",
        "| method | trainable params | FLOPs/token | tokens/s | achieved TFLOP/s | MFU | peak GPU memory GiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "-"
        memory = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "-"
        lines.append(
            f"| {r.method} | {r.trainable_params:,} | {r.flops_per_token:.4g} | {r.tokens_per_s:,.0f} | "
            f"{r.achieved_tflops:.4g} | {mfu} | {memory} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help=f"smoke run: model {TINY_SIZE}, run {TINY_RUN}")
    for name, value in FULL_SIZE.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"model shape (default {value})")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 8)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 2048)")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 10)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (model FLOPs, and so MFU, count no recomputation)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak dense bf16 TFLOP/s (default: by GPU name)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = TINY_SIZE if args.tiny else FULL_SIZE
    run = TINY_RUN if args.tiny else {"batch_size": 8, "seq_len": 2048, "steps": 10, "warmup": 3}
    for name, value in {**sizes, **run}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(NO_GPU)
    device = torch.device(args.device)
    shape = Shape(args.layers, args.hidden, args.heads, args.kv_heads, args.intermediate, args.vocab)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops if args.peak_tflops is not None else peak_tflops_for(name) if device.type == "cuda" else None
    if device.type == "cuda" and peak is None:
        print(f"gpu_throughput: no known bf16 peak for {name!r}; pass --peak-tflops for MFU", file=sys.stderr)
    results = []
    for method in args.methods:
        results.append(measure(method, shape, args, device, peak))
        gc.collect()  # the last method's model, gradients and optimizer state go before the next is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
    header = (
        f"{name}, peak {peak if peak else '?'} TFLOP/s bf16; llama {shape.layers} layers x {shape.hidden} "
        f"({shape.heads} heads, {shape.kv_heads} KV heads, vocab {shape.vocab}), batch {args.batch_size} x {args.seq_len} tokens, "
        f"{args.steps} timed steps after {args.warmup}, attention {args.attn}"
        + (", gradient checkpointing" if args.gradient_checkpointing else "")
        + f", LoRA r={args.lora_r} all-linear, torch {torch.__version__}"
    )
    print(table(results, header))
    if args.json:
        args.json.write_text(json.dumps({"setup": header, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
