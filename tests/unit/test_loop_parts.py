from __future__ import annotations

import torch
from transformers import ByT5Tokenizer

from rayft.config import TinyModelSpec, TrainConfig
from rayft.data.batching import Example, collate
from rayft.models.loading import build_tiny_model
from rayft.training.engines import TorchDDPEngine, build_optimizer
from rayft.training.loop import forward_backward, total_steps


def _examples(n: int) -> list[Example]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = 6 + i % 5  # ragged, so per-micro-batch token counts differ
        ids = torch.randint(3, 250, (length,), generator=generator).tolist()
        out.append(Example(ids, [-100] * 3 + ids[3:], 3, ""))
    return out


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def test_accumulated_micro_batches_equal_one_big_batch(byte_tokenizer: ByT5Tokenizer) -> None:
    """Pins token-weighted accumulation: 2 micro-batches of 4 give the gradients of 1 batch of 8,
    even when the micro-batches hold different numbers of trained tokens."""
    model = build_tiny_model(TinyModelSpec(hidden=32, heads=4), byte_tokenizer)
    examples = _examples(8)
    cpu = torch.device("cpu")
    engine = TorchDDPEngine(model, TrainConfig(), max_steps=1, device=cpu, precision="fp32")
    whole = forward_backward(engine, [collate(examples, 0)], cpu)
    big = _grads(model)
    split = forward_backward(engine, [collate(examples[:4], 0), collate(examples[4:], 0)], cpu)
    accumulated = _grads(model)
    torch.testing.assert_close(split, whole)
    for a, b in zip(accumulated, big):
        # fp32 sums in another order differ by ~1e-7 absolute; a mean of micro-batch means by ~1e-2
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_weight_decay_skips_biases_and_norms(byte_tokenizer: ByT5Tokenizer) -> None:
    model = build_tiny_model(TinyModelSpec(hidden=32, heads=4), byte_tokenizer)
    groups = build_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert len(groups[1]["params"]) == 2 * 2 + 1  # two norms per layer + the final norm


def test_total_steps_from_epochs_or_max_steps() -> None:
    assert total_steps(TrainConfig(epochs=2.5), steps_per_epoch=10) == 25
    assert total_steps(TrainConfig(epochs=2.5, max_steps=7), steps_per_epoch=10) == 7
