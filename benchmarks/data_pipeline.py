"""The data pipeline's two performance promises, measured in one run.

    .venv/bin/python benchmarks/data_pipeline.py [--rows 10000 100000] [--throughput-rows 20000]

1. Memory stays flat as the data grows: a fresh process per size runs `prepare_datasets` (read,
   validate, split, tokenize on Ray Data) and reports the driver's peak RSS above its RSS once
   Ray and the libraries are loaded. The in-process reader (`read_splits`, what a driver that
   holds the rows would do) runs on the same files as the contrast.
2. Tokenize + pack throughput: Ray Data `map_batches` against `datasets.map(num_proc=P)` with
   the same per-row function, the same rows, the same packing, and P = Ray's CPUs. Ratio > 1
   means Ray Data is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep the embedded Ray on loopback


def _experiment(data_path: Path, storage: Path) -> dict:
    return {
        "name": "bench",
        "model": {"tiny": {"arch": "llama", "layers": 1, "hidden": 32, "heads": 4}},
        "data": {"train": str(data_path), "max_length": 256, "packing": True, "split": {"val": 0.05, "test": 0.05}},
        "run": {"storage_path": str(storage)},
    }


def write_rows(path: Path, n: int) -> Path:
    """Unique instruction rows of realistic variety (lengths 40-120 bytes)."""
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    with path.open("w") as out:
        for i in range(n):
            prompt = " ".join(words[(i * 7 + k) % len(words)] for k in range(3 + i % 9))
            out.write(json.dumps({"instruction": f"Repeat item {i}: {prompt}", "output": prompt.upper()}) + "\n")
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(data_path: str, mode: str) -> None:
    """Child process: print {"baseline_mb", "peak_mb", "seconds"} for one pipeline."""
    import ray

    from rayft.config import config_from_dict
    from rayft.data.pipeline import prepare_datasets, read_splits
    from rayft.models.loading import load_tokenizer, resolve_base_model, tokenizer_source

    with tempfile.TemporaryDirectory() as scratch:
        config = config_from_dict(_experiment(Path(data_path), Path(scratch)))
        run_dir = Path(scratch) / "run"
        tokenizer_path = tokenizer_source(config.model, resolve_base_model(config.model, run_dir))
        tokenizer = load_tokenizer(tokenizer_path)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        import pandas  # noqa: F401  (loaded by both paths; part of the baseline)

        baseline = _rss_mb()
        start = time.perf_counter()
        if mode == "ray":
            prepared = prepare_datasets(config, tokenizer_path, run_dir)
            rows = sum(prepared.counts.splits.values())
        else:
            split_rows = read_splits(config, run_dir, tokenizer)
            rows = sum(facts.rows for facts in split_rows.facts.splits.values())
        print(json.dumps({"baseline_mb": baseline, "peak_mb": _rss_mb(), "seconds": time.perf_counter() - start, "rows": rows}))
        ray.shutdown()


def _child(data_path: Path, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(data_path), mode], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_throughput(data_path: Path, processes: int) -> dict:
    """Tokenize + pack the same rows on Ray Data and with datasets.map; each timed after a warm-up."""
    import datasets
    import ray

    from rayft.config import config_from_dict
    from rayft.data.batching import load_examples
    from rayft.data.packing import pack_examples
    from rayft.data.pipeline import _TokenizeBatch
    from rayft.data.rows import order_key, row_features
    from rayft.models.loading import load_tokenizer, resolve_base_model, tokenizer_source

    scratch = Path(tempfile.mkdtemp())
    config = config_from_dict(_experiment(data_path, scratch))
    tokenizer_path = tokenizer_source(config.model, resolve_base_model(config.model, scratch / "run"))
    records = [{"source": str(data_path), "file_index": 0, "line": i + 1, "copy": 0, "record": line}
               for i, line in enumerate(data_path.read_text().splitlines())]
    ray.init(address="local", num_cpus=processes, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    def with_ray(rows: list[dict]) -> int:
        dataset = ray.data.from_items(rows, override_num_blocks=processes * 4)
        tokenized = dataset.map_batches(_TokenizeBatch(tokenizer_path, config.data), batch_format="pandas")
        kept = tokenized.filter(lambda row: row["drop_reason"] == "").select_columns(["order", "input_ids", "labels", "prompt_len", "reference"])
        packed, _ = pack_examples(load_examples(kept.iter_rows()), config.data.max_length)
        return len(packed)

    tokenizer = load_tokenizer(tokenizer_path)

    def tokenize(batch: dict) -> dict:
        features = [row_features(record, config.data, tokenizer) for record in batch["record"]]
        out = {name: [f[name] for f in features] for name in ("input_ids", "labels", "prompt_len", "reference", "drop_reason")}
        out["order"] = [int(order_key(f, line, c)) for f, line, c in zip(batch["file_index"], batch["line"], batch["copy"])]
        return out

    def with_datasets(rows: list[dict]) -> int:
        dataset = datasets.Dataset.from_list(rows).map(tokenize, batched=True, num_proc=processes, load_from_cache_file=False)
        kept = dataset.filter(lambda row: row["drop_reason"] == "", num_proc=processes)
        packed, _ = pack_examples(load_examples(kept), config.data.max_length)
        return len(packed)

    datasets.disable_progress_bars()
    result = {}
    for name, run in (("ray_data", with_ray), ("datasets_map", with_datasets)):
        run(records[:500])  # warm-up: worker processes, imports, tokenizer
        start = time.perf_counter()
        sequences = run(records)
        result[name] = {"seconds": time.perf_counter() - start, "packed_sequences": sequences}
    ray.shutdown()
    result["ratio_datasets_over_ray"] = result["datasets_map"]["seconds"] / result["ray_data"]["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000], help="sizes for the memory part (none: skip it)")
    parser.add_argument("--throughput-rows", type=int, default=20_000, help="rows for the throughput part (0: skip it)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure_memory(*args.child)
        return
    with tempfile.TemporaryDirectory() as scratch:
        print("peak driver RSS above baseline (MB):" if args.rows else "memory part skipped")
        for n in args.rows:
            path = write_rows(Path(scratch) / f"rows{n}.jsonl", n)
            for mode in ("ray", "in_process"):
                m = _child(path, mode)
                print(f"  {n:>7} rows  {mode:<10}  +{m['peak_mb'] - m['baseline_mb']:7.1f} MB  ({m['seconds']:.1f} s, {m['rows']} rows)")
        if not args.throughput_rows:
            return
        path = write_rows(Path(scratch) / "throughput.jsonl", args.throughput_rows)
        t = measure_throughput(path, args.processes)
        print(f"tokenize + pack {args.throughput_rows} rows with {args.processes} processes:")
        for name in ("ray_data", "datasets_map"):
            print(f"  {name:<13} {t[name]['seconds']:6.2f} s  ({t[name]['packed_sequences']} packed sequences)")
        print(f"  ratio datasets.map / Ray Data time: {t['ratio_datasets_over_ray']:.2f}x (>= 1: Ray Data at least as fast)")


if __name__ == "__main__":
    main()
