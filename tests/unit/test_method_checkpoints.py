"""Every method's checkpoint restores exactly: a fresh model restored from it takes the same next
step as the original (weights, optimizer and RNG).

Pins two failures of restoring from the model/ files alone: peft saves a prefix MLP only as its
output (the MLP itself would be lost), and a bottleneck adapter checkpoint holds no base weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer, get_scheduler

from rayft.config import AdapterMethod, FullMethod, IA3Method, LoraMethod, ModelConfig, PrefixMethod, PromptMethod, TinyModelSpec
from rayft.models.loading import load_causal_lm, resolve_base_model
from rayft.models.methods import apply_method
from rayft.training.checkpoint import MODEL_DIR, TRAINABLE_FILE, Progress, restore_checkpoint, rng_state, save_checkpoint

METHODS = {
    "full": FullMethod(),
    "lora-dora-rslora": LoraMethod(r=2, target_modules="all-linear", use_dora=True, use_rslora=True, dropout=0.1),
    "prefix-projection": PrefixMethod(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=8),
    "prompt": PromptMethod(num_virtual_tokens=3),
    "ia3": IA3Method(),
    "adapter": AdapterMethod(size=4, modules_to_save=["norm"]),
}
MODEL_FILES = {
    "full": "model.safetensors",
    "lora-dora-rslora": "adapter_model.safetensors",
    "prefix-projection": "adapter_model.safetensors",
    "prompt": "adapter_model.safetensors",
    "ia3": "adapter_model.safetensors",
    "adapter": "bottleneck_adapters.safetensors",
}


def _setup(base: str, method):
    torch.manual_seed(0)
    model = apply_method(load_causal_lm(base), method)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    return model, optimizer, get_scheduler("linear", optimizer, num_warmup_steps=1, num_training_steps=10)


def _step(model, optimizer, scheduler, seed: int) -> None:
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(seed))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("name", list(METHODS))
def test_checkpoint_restores_every_method_exactly(tmp_path: Path, byte_tokenizer: ByT5Tokenizer, name: str) -> None:
    base = resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=32, layers=2, heads=4)), tmp_path)
    model, optimizer, scheduler = _setup(base, METHODS[name])
    for seed in range(3):
        _step(model.train(), optimizer, scheduler, seed)
    saved_rng = rng_state()
    save_checkpoint(tmp_path / "ckpt", model, byte_tokenizer, optimizer, scheduler, Progress(3, 0, 3), [saved_rng], {})
    assert (tmp_path / "ckpt" / MODEL_DIR / MODEL_FILES[name]).is_file()
    assert (tmp_path / "ckpt" / TRAINABLE_FILE).is_file() == (name != "full")

    fresh, fresh_optimizer, fresh_scheduler = _setup(base, METHODS[name])
    _step(fresh.train(), fresh_optimizer, fresh_scheduler, 99)  # diverge first: restore must overwrite everything
    assert restore_checkpoint(tmp_path / "ckpt", fresh, fresh_optimizer, fresh_scheduler, rank=0, world_size=1) == Progress(3, 0, 3)
    _step(fresh.train(), fresh_optimizer, fresh_scheduler, 3)
    torch.set_rng_state(saved_rng["torch"])
    _step(model.train(), optimizer, scheduler, 3)
    for (param_name, a), b in zip(model.named_parameters(), fresh.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=param_name)
