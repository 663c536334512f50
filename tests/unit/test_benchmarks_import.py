"""The benchmarks against the current API: every module imports (its heavy work stays in main()),
the experiments they build validate against today's schema, and gpu_throughput's CPU smoke mode
runs through rayft's engine with the closed-form FLOP counts its MFU rests on."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import pytest
import torch

from rayft.config import config_from_dict
from tests.conftest import REPO

BENCHMARKS = sorted(path.stem for path in (REPO / "benchmarks").glob("*.py"))


def test_every_benchmark_is_covered() -> None:
    assert BENCHMARKS == ["data_pipeline", "gpu_throughput", "loop_overhead", "method_memory", "sweep_efficiency", "zero_memory"]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_imports_without_running(name: str) -> None:
    """Pins API drift: a benchmark that imports a moved or renamed rayft name (method_memory once
    imported build_optimizer from the loop after it moved to engines.py) fails here, not on the idle
    machine that runs it at full size. Importing must start nothing (no Ray)."""
    import ray

    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)
    assert not ray.is_initialized()


def test_benchmark_experiments_validate(tmp_path: Path) -> None:
    """Pins the benchmarks' experiment dicts to the current config schema (unknown or renamed keys fail)."""
    from benchmarks import data_pipeline, loop_overhead, sweep_efficiency, zero_memory

    data = tmp_path / "data.jsonl"
    assert config_from_dict(data_pipeline._experiment(data, tmp_path)).data.packing
    assert config_from_dict(loop_overhead.experiment(data, tmp_path, 80, 1)).train.max_steps == 80
    space = {"train.lr": {"choice": sweep_efficiency.LRS}, "method.r": {"choice": sweep_efficiency.RANKS}}
    grid = config_from_dict(sweep_efficiency._experiment(tmp_path, 40, "exhaustive", {
        "search": "grid", "num_samples": 1, "space": space, "scheduler": {"type": "none"},
    }))
    asha = config_from_dict(sweep_efficiency._experiment(tmp_path, 40, "asha", {
        "search": "optuna", "seed": 0, "num_samples": 12, "space": space,
        "scheduler": {"type": "asha", "time_attr": "training_iteration", "grace_period": 2, "reduction_factor": 3},
    }))
    assert (grid.tune.search, asha.tune.search) == ("grid", "optuna")
    for argv in ([], ["--tiny"]):
        args: argparse.Namespace = zero_memory.parse_args(argv)
        for engine in args.engines.split(","):
            config = config_from_dict(zero_memory.experiment(engine, args, tmp_path))
            stage = None if config.train.deepspeed is None else config.train.deepspeed.stage
            assert (config.train.backend, stage) == (("torch", None) if engine == "torch" else ("deepspeed", int(engine.removesuffix("ds"))))
    tiny = zero_memory.parse_args(["--tiny"])
    assert (tiny.layers, tiny.hidden, tiny.heads, tiny.steps, tiny.batch_size, tiny.seq_len) == (2, 64, 4, 2, 1, 16)


def test_gpu_throughput_without_a_gpu_exits_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import gpu_throughput

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        gpu_throughput.main([])
    assert exit_info.value.code == gpu_throughput.NO_GPU and "\n" not in gpu_throughput.NO_GPU


def test_gpu_peaks_by_device_name() -> None:
    """Pins the name lookup's order: the specific names (H100 PCIe, L40S) before the ones they contain."""
    from benchmarks.gpu_throughput import peak_tflops_for

    names = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S", "NVIDIA L4", "Tesla V100-SXM2-16GB"]
    assert [peak_tflops_for(name) for name in names] == [989.0, 756.0, 989.0, 312.0, 362.0, 121.0, None]


def test_gpu_throughput_cpu_smoke_run_counts_flops_in_closed_form(tmp_path: Path) -> None:
    """Pins the MFU arithmetic on the tiny llama (vocab V=384, width H=64, 2 layers, feed-forward 128,
    sequence 32): full fine-tuning 6·N + 12·L·H·T with N = every parameter but the input embedding;
    LoRA 4·N_frozen + 6·N_adapter + 12·L·H·T; MFU = achieved FLOP/s / peak."""
    from benchmarks import gpu_throughput

    results = gpu_throughput.main(["--device", "cpu", "--tiny", "--peak-tflops", "2", "--json", str(tmp_path / "out.json")])
    V, H, L, I, T = 384, 64, 2, 128, 32
    total = 2 * V * H + L * (4 * H * H + 3 * H * I + 2 * H) + H  # embeddings, untied head, blocks, final norm
    adapter = L * 16 * (4 * (H + H) + 2 * (H + I) + (I + H))  # LoRA r=16 on q,k,v,o, gate, up, down
    attention = 12 * L * H * T
    full, lora = results
    assert (full.method, full.total_params, full.trainable_params, full.flop_params, full.adapter_params) == ("full", total, total, total - V * H, 0)
    assert full.flops_per_token == 6 * (total - V * H) + attention == 690_048
    assert (lora.total_params, lora.trainable_params, lora.flop_params, lora.adapter_params) == (total + adapter, adapter, total - V * H + adapter, adapter)
    assert lora.flops_per_token == 4 * (total - V * H) + 6 * adapter + attention == 685_312
    for result in results:
        assert result.tokens == 3 * 2 * T  # timed steps x batch x sequence
        assert result.tokens_per_s == pytest.approx(result.tokens / result.seconds)
        assert result.achieved_tflops == pytest.approx(result.flops_per_token * result.tokens_per_s / 1e12)
        assert result.mfu == pytest.approx(result.achieved_tflops / 2.0)
        assert result.peak_memory_gib is None and torch.isfinite(torch.tensor(result.last_loss))
    written = json.loads((tmp_path / "out.json").read_text())
    assert [r["method"] for r in written["results"]] == ["full", "lora"] and "cpu, peak 2.0 TFLOP/s" in written["setup"]
