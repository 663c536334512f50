from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, ByT5Tokenizer, get_scheduler

from rayft.evaluate.early_stopping import EarlyStopping
from rayft.config import LoraMethod, ModelConfig, TinyModelSpec
from rayft.models.loading import load_causal_lm, resolve_base_model
from rayft.models.methods import apply_method
from rayft.training.checkpoint import (
    MARKER_FILE,
    IncompleteCheckpointError,
    Progress,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
)


def _lora_setup(base: str):
    torch.manual_seed(0)
    model = apply_method(load_causal_lm(base), LoraMethod(r=2, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=1, num_training_steps=10)
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler) -> None:
    ids = torch.randint(3, 200, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()

STOPPING = EarlyStopping("eval_loss", "min", patience=3, best=1.5, best_step=2, bad_evaluations=1).state_dict()


def test_lora_checkpoint_holds_only_the_adapter_and_restores_exactly(tmp_path: Path, byte_tokenizer: ByT5Tokenizer) -> None:
    base = resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=32, layers=2, heads=4)), tmp_path)
    model, optimizer, scheduler = _lora_setup(base)
    for _ in range(3):
        _step(model, optimizer, scheduler)
    directory = tmp_path / "ckpt"
    saved_rng = rng_state()
    save_checkpoint(directory, model, byte_tokenizer, optimizer, scheduler, Progress(3, 0, 3, early_stopping=STOPPING), [saved_rng], {"eval_loss": 1.0})

    files = {p.name for p in (directory / "model").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin"}, "LoRA checkpoints hold the adapter only"
    assert json.loads((directory / MARKER_FILE).read_text())["step"] == 3

    # the adapter loads with plain peft on top of the saved base model
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), directory / "model")
    ids = torch.randint(3, 200, (1, 10))
    torch.testing.assert_close(reloaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)

    # a fresh model + optimizer restored from the checkpoint continues exactly as the original does
    fresh, fresh_opt, fresh_sched = _lora_setup(base)
    progress = restore_checkpoint(directory, fresh, fresh_opt, fresh_sched, rank=0, world_size=1)
    assert progress == Progress(3, 0, 3, early_stopping=STOPPING)  # a resumed run stops where it would have
    assert fresh_sched.state_dict() == scheduler.state_dict()
    assert torch.equal(torch.get_rng_state(), saved_rng["torch"])
    _step(fresh.train(), fresh_opt, fresh_sched)
    torch.set_rng_state(saved_rng["torch"])
    _step(model.train(), optimizer, scheduler)
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a, b, msg=name)


def test_checkpoint_without_marker_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(IncompleteCheckpointError, match="no rayft_checkpoint.json"):
        restore_checkpoint(tmp_path, torch.nn.Linear(1, 1), None, None, rank=0, world_size=1)  # type: ignore[arg-type]


def test_checkpoint_from_other_world_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / MARKER_FILE).write_text(json.dumps({"step": 1, "world_size": 4}))
    with pytest.raises(IncompleteCheckpointError, match="scaling.num_workers=4"):
        restore_checkpoint(tmp_path, torch.nn.Linear(1, 1), None, None, rank=0, world_size=2)  # type: ignore[arg-type]
