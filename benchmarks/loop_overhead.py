"""rayft's training loop against a plain PyTorch loop: same model, same batches, same recipe.

    .venv/bin/python benchmarks/loop_overhead.py [--steps 80] [--threads 1]

Prints steady-state tokens/s of both, their ratio (target: rayft >= 0.95x the plain loop) and
rayft's start-up time (command launch to the first training step). The plain loop runs before
and after rayft and the baseline is their mean, so drift on a shared machine affects both.

`--threads` is the torch threads of both loops (and rayft's cpus_per_worker). The default, 1,
leaves a core of a 2-core machine to Ray's own processes; with every core given to torch, Ray's
daemons preempt its threads and the ratio measures that contention rather than the loop
(benchmarks/RESULTS.md has both).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import get_scheduler

from rayft.config import config_from_dict
from rayft.data.batching import Example, collate, epoch_batches
from rayft.data.formats import format_record
from rayft.data.tokenize import TokenizedExample, tokenize_segments
from rayft.models.loading import load_causal_lm, load_tokenizer
from rayft.tracking.metrics_log import read_metrics
from rayft.training.engines import build_optimizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def make_data(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(rows):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 40)))
            handle.write(json.dumps({"instruction": "Repeat the last word.", "input": text, "output": text.split()[-1]}) + "\n")


def experiment(data: Path, storage: Path, steps: int, threads: int) -> dict:
    return {
        "name": "bench",
        "model": {"tiny": {"arch": "llama", "layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024, "max_position": 512}},
        "method": {"type": "full"},
        "data": {"train": str(data), "max_length": 320, "split": {"val": 0.0, "test": 0.0}},
        "train": {"max_steps": steps, "lr": 1e-4, "batch_size": 8, "logging_steps": 10, "eval_steps": None,
                  "save_steps": None, "scheduler": "linear", "seed": 0},
        "eval": {"metrics": []},
        "scaling": {"num_workers": 1, "cpus_per_worker": threads},
        "run": {"storage_path": str(storage), "overwrite": True},
    }


def plain_loop(raw: dict, base_model: str, steps: int, threads: int, warmup: int) -> float:
    """The baseline: the same examples, batch order, optimizer, schedule and clipping in a bare loop."""
    torch.set_num_threads(threads)
    config = config_from_dict(raw)
    tokenizer = load_tokenizer(base_model)
    examples = []
    for line in Path(config.data.train).read_text().splitlines():
        formatted = format_record(json.loads(line), config.data)
        tokens = tokenize_segments(formatted.segments, tokenizer, config.data.max_length, "drop")
        assert isinstance(tokens, TokenizedExample)
        examples.append(Example(tokens.input_ids, tokens.labels, tokens.prompt_len, formatted.reference))
    torch.manual_seed(0)
    model = load_causal_lm(base_model).train()
    optimizer = build_optimizer(model, config.train)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    batches = epoch_batches(len(examples), config.train.batch_size, 1, 0, config.train.seed, 0)
    tokens, started = 0, 0.0
    for step in range(steps):
        if step == warmup:
            tokens, started = 0, time.perf_counter()
        batch = collate([examples[i] for i in batches[step % len(batches)]], tokenizer.pad_token_id)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/loop_overhead.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rayft-bench-"))
    make_data(work / "data.jsonl", rows=2000)
    raw = experiment(work / "data.jsonl", work / "runs", args.steps, args.threads)
    (work / "bench.yaml").write_text(yaml.safe_dump(raw))

    launched = time.time()
    rayft = Path(sys.executable).with_name("rayft")
    subprocess.run([str(rayft), "train", str(work / "bench.yaml")], check=True, capture_output=True)
    records = read_metrics(work / "runs" / "bench" / "metrics.jsonl")
    first_step = next(r["time"] for r in records if r["step"] == 0)
    windows = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]  # skip the warm-up window
    rayft_tps = statistics.median(windows)

    base_model = str(work / "runs" / "bench" / "base_model")
    plain_before = plain_loop(raw, base_model, args.steps, args.threads, warmup=10)
    plain_after = plain_loop(raw, base_model, args.steps, args.threads, warmup=10)
    plain_tps = (plain_before + plain_after) / 2

    params = sum(p.numel() for p in load_causal_lm(base_model).parameters())
    result = {
        "model_params": params,
        "steps": args.steps,
        "threads": args.threads,
        "plain_tokens_per_s": round(plain_tps, 1),
        "plain_runs": [round(plain_before, 1), round(plain_after, 1)],
        "rayft_tokens_per_s": round(rayft_tps, 1),
        "ratio": round(rayft_tps / plain_tps, 3),
        "rayft_startup_s": round(first_step - launched, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
