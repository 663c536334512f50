"""Precision (bf16/fp16/fp32 and the CPU fallback), gradient checkpointing and the attention kernel, on the tiny model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer

from rayft.config import LoraMethod, ModelConfig, TinyModelSpec, TrainConfig
from rayft.models.loading import enable_gradient_checkpointing, load_causal_lm, resolve_base_model
from rayft.models.methods import apply_method
from rayft.training.checkpoint import Progress, restore_checkpoint, rng_state, save_checkpoint
from rayft.training.engines import TorchDDPEngine, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=32, layers=2, heads=4)), tmp_path_factory.mktemp("base"))


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 250, (4, 16), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


def _train(engine: TorchDDPEngine, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        with engine.autocast():
            loss = engine.model(**_batch(), use_cache=False).loss
        engine.backward(loss)
        engine.clip(1.0)
        engine.step()
        engine.zero_grad()
        losses.append(loss.item())
    return losses


def test_fp16_on_cpu_falls_back_to_fp32_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rayft.train"):
        assert resolve_precision("fp16", CPU) == "fp32"
    assert "train.precision=fp16: fp16 needs a GPU (this worker trains on cpu); training in fp32 instead" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rayft.train"):
        assert resolve_precision("bf16", CPU) == "bf16"
        assert resolve_precision("fp32", CPU) == "fp32"
    assert caplog.text == ""


def test_bf16_autocast_computes_in_bf16_keeps_fp32_weights_and_learns(base: str) -> None:
    torch.manual_seed(0)
    engine = TorchDDPEngine(load_causal_lm(base), TrainConfig(lr=1e-2), 10, CPU, "bf16")
    with engine.autocast():
        assert engine.model(**_batch(), use_cache=False).logits.dtype == torch.bfloat16
    assert {p.dtype for p in engine.model.parameters()} == {torch.float32}
    assert engine.scaler is None, "bf16 has fp32's range: no loss scaling"
    losses = _train(engine, 6)
    assert losses[-1] < losses[0] - 2.0


def test_fp16_scales_the_loss_and_its_scaler_resumes(base: str, tmp_path: Path, byte_tokenizer: ByT5Tokenizer) -> None:
    """The fp16 path (GPU in practice) driven on CPU, where torch supports it: GradScaler
    scales, unscales before clipping, steps, and its scale survives a checkpoint."""
    torch.manual_seed(0)
    train = TrainConfig(lr=1e-2)
    engine = TorchDDPEngine(load_causal_lm(base), train, 10, CPU, "fp16")
    assert engine.scaler is not None and engine.scaler.get_scale() == 2.0**16
    losses = _train(engine, 6)
    assert losses[-1] < losses[0] - 2.0
    save_checkpoint(tmp_path, engine.model, byte_tokenizer, engine.optimizer, engine.scheduler, Progress(6, 0, 6), [rng_state()], {}, engine.scaler)
    fresh = TorchDDPEngine(load_causal_lm(base), train, 10, CPU, "fp16")
    assert fresh.scaler.state_dict() != engine.scaler.state_dict()  # its growth tracker counted 6 good steps
    restore_checkpoint(tmp_path, fresh.model, fresh.optimizer, fresh.scheduler, 0, 1, fresh.scaler)
    assert fresh.scaler.state_dict() == engine.scaler.state_dict()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients(base: str, method: str) -> None:
    """Recomputing activations must be exact, also for adapters inside checkpointed blocks whose
    inputs (frozen embeddings under LoRA) do not require grad."""

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = load_causal_lm(base)
        if checkpointing:
            enable_gradient_checkpointing(model)
        if method == "lora":
            model = apply_method(model, LoraMethod(r=2, dropout=0.0, target_modules="all-linear"))
        model.train()
        assert model.is_gradient_checkpointing == checkpointing
        model(**_batch(), use_cache=False).loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in checkpointed.items():
        # LoRA starts with B = 0, so A's first gradient is zero by design; B's must not be
        if method == "full" or "lora_B" in name:
            assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_attention_defaults_to_sdpa_and_eager_agrees(base: str) -> None:
    default, eager = load_causal_lm(base), load_causal_lm(base, attn_implementation="eager")
    assert default.config._attn_implementation == "sdpa"
    assert eager.config._attn_implementation == "eager"
    batch = _batch()
    torch.testing.assert_close(default(input_ids=batch["input_ids"]).logits, eager(input_ids=batch["input_ids"]).logits, rtol=1e-4, atol=1e-4)
