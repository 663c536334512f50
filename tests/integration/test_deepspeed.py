"""DeepSpeed ZeRO 0-3 on 2 Ray Train workers (gloo): every method trains under DeepSpeed (each
stage taken by some method; ZeRO-0 by prompt tuning in test_evaluation.py's early-stopping run;
tests/unit/test_engines.py compares every stage with the torch engine
step for step), and a crashed run resumes exactly. Short runs on a 170-row set: each fit is
mostly start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import rayft
from rayft.tracking.metrics_log import read_metrics
from rayft.training.checkpoint import MARKER_FILE, read_marker
from rayft.training.deepspeed_config import DEEPSPEED_CONFIG_FILE
from rayft.training.loop import FAIL_AT_STEP_ENV
from tests.conftest import QUICKSTART_DATA, tiny_experiment
from tests.integration.method_specs import METHODS as PEFT_METHODS

pytestmark = pytest.mark.ray

METHODS: dict[str, tuple[dict[str, Any], float]] = {
    "full": ({"type": "full"}, 1e-3),
    "lora": ({"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"}, 3e-3),  # dropout: RNG matters on resume
    **{name: (method, lr) for name, (method, lr, _) in PEFT_METHODS.items()},
}
LORA_PARAMS, FULL_PARAMS = 5_888, 57_504  # LoRA r=4 on all 7 linears of 2 blocks at width 32; the whole tiny llama


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """170 instruction rows: 17 validation rows, which 2 workers cannot share evenly (ZeRO-3 lockstep)."""
    path = tmp_path_factory.mktemp("data") / "small.jsonl"
    path.write_text("".join(QUICKSTART_DATA.read_text().splitlines(keepends=True)[:170]))
    return path


def _experiment(tmp_path: Path, data: Path, name: str, method: str, stage: int, **run: Any) -> dict[str, Any]:
    return tiny_experiment(
        tmp_path,
        name=name,
        method=METHODS[method][0],
        data={"train": str(data), "split": {"val": 0.1, "test": 0.0, "seed": 0}},
        train={"max_steps": 8, "lr": METHODS[method][1], "logging_steps": 1, "eval_steps": 8, "save_steps": 4,
               "backend": "deepspeed", "deepspeed": {"stage": stage}},
        eval={"max_generate_examples": 7, "generate": {"max_new_tokens": 4}},  # 7: one rank answers one more
        run={"storage_path": str(tmp_path / "runs"), **run},
    )


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def _check_trained_run(result: Any, method: str, stage: int) -> None:
    """Loss went down; the last checkpoint is complete on both ranks and its export loads."""
    assert result.data["splits"] == {"train": 153, "validation": 17, "test": 0}
    if method in {"lora", "full"}:
        assert result.trainable_params == (LORA_PARAMS if method == "lora" else FULL_PARAMS)
        assert result.best_metrics["eval_loss"] < result.before["eval_loss"] - 0.3
    else:
        assert 0 < result.trainable_params < result.total_params
        assert result.best_metrics["eval_loss"] < result.before["eval_loss"]
    losses = _losses(Path(result.run_dir))
    assert sorted(losses) == list(range(1, 9)) and losses[8] < losses[1]
    written = json.loads((Path(result.run_dir) / DEEPSPEED_CONFIG_FILE).read_text())
    assert written["zero_optimization"]["stage"] == stage and written["train_batch_size"] == 8 * 2

    checkpoint = Path(result.last_checkpoint)
    files = read_marker(checkpoint)["files"]  # raises unless every listed file is there, at its size
    shards = {name.split("/")[-1] for name in files if name.startswith("deepspeed/state/")}
    if stage >= 1:  # optimizer state is sharded: each rank wrote its own part into the shared directory
        assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= shards
    base = AutoModelForCausalLM.from_pretrained(Path(result.run_dir) / "base_model")
    if method == "lora":
        assert sum(t.numel() for t in load_file(checkpoint / "model" / "adapter_model.safetensors").values()) == LORA_PARAMS
        assert PeftModel.from_pretrained(base, checkpoint / "model").peft_config["default"].r == 4
    elif method == "full":
        exported = AutoModelForCausalLM.from_pretrained(checkpoint / "model")
        assert sum(p.numel() for p in exported.parameters()) == FULL_PARAMS
        assert not exported.model.layers[0].mlp.up_proj.weight.equal(base.model.layers[0].mlp.up_proj.weight)
    else:  # the method's own file, gathered from both ranks (ZeRO-3 shards it), with every trained tensor
        saved = load_file(checkpoint / "model" / PEFT_METHODS[method][2])
        assert sum(t.numel() for t in saved.values()) > 0


# Full fine-tuning trains (at ZeRO-3) in the resume test below, prompt tuning (at ZeRO-0) in the
# early-stopping test of test_evaluation.py; DoRA under DeepSpeed is in tests/unit/test_engines.py.
@pytest.mark.parametrize(("method", "stage"), [("lora", 2), ("prefix", 1), ("ia3", 1), ("adapter", 3)])
def test_method_trains_under_zero_stage(tmp_path: Path, small_data: Path, method: str, stage: int) -> None:
    result = rayft.train(_experiment(tmp_path, small_data, f"{method}-zero{stage}", method, stage))
    _check_trained_run(result, method, stage)


def test_a_crashed_deepspeed_run_resumes_exactly(tmp_path: Path, small_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins exact resume under DeepSpeed: after a crash at step 6 the restarted run loads the
    step-4 checkpoint (every rank's shard of weights and optimizer state: full fine-tuning at
    ZeRO-3) and logs the same step, lr and loss as an uninterrupted run. (LoRA at ZeRO-2 and the
    PEFT methods at ZeRO-3 resume exactly in tests/unit/test_engines.py.)"""
    method, stage = "full", 3
    straight = rayft.train(_experiment(tmp_path, small_data, "straight", method, stage))
    _check_trained_run(straight, method, stage)

    monkeypatch.setenv(FAIL_AT_STEP_ENV, "6")
    resumed = rayft.train(_experiment(tmp_path, small_data, "resumed", method, stage, max_failures=1))

    expected = [r for r in read_metrics(Path(straight.run_dir) / "metrics.jsonl") if "loss" in r]
    got = [r for r in read_metrics(Path(resumed.run_dir) / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, 9))
    for want, have in zip(expected, got):
        assert have["lr"] == want["lr"], f"step {want['step']}"
        assert have["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=1e-7), f"step {want['step']}"
    assert resumed.metrics["step"] == 8
    assert resumed.best_metrics["eval_loss"] == pytest.approx(straight.best_metrics["eval_loss"], rel=1e-6)
    assert (Path(resumed.last_checkpoint) / MARKER_FILE).is_file()
