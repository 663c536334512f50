from __future__ import annotations

import torch
from transformers import ByT5Tokenizer

from rayft.config import TinyModelSpec
from rayft.data.batching import Example, collate
from rayft.data.packing import pack_examples
from rayft.models.loading import build_tiny_model


def _example(length: int, seed: int) -> Example:
    ids = torch.randint(3, 250, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
    return Example(ids, [-100] * 2 + ids[2:], 2, "")


def test_first_fit_decreasing_bins_and_efficiency() -> None:
    examples = [_example(n, n) for n in (6, 3, 5, 2, 4)]
    packed, stats = pack_examples(examples, max_length=10)
    assert [p.position_ids for p in packed] == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3], [0, 1, 2, 0, 1, 2, 3, 4, 0, 1]]
    assert packed[0].input_ids == examples[0].input_ids + examples[4].input_ids
    assert (stats.sequences, stats.real_tokens, stats.slots, stats.efficiency) == (2, 20, 20, 1.0)


def test_packed_sequence_attends_only_within_each_example(byte_tokenizer: ByT5Tokenizer) -> None:
    """Pins no cross-example attention and restarted positions: each example's logits inside a
    packed row (padded, next to other examples) equal its logits when run alone."""
    model = build_tiny_model(TinyModelSpec(hidden=32, heads=4), byte_tokenizer).eval()
    parts = [_example(7, 1), _example(5, 2), _example(9, 3)]
    packed, _ = pack_examples(parts, max_length=16)
    batch = collate(packed, pad_id=0)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed_logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        for row, example in enumerate(packed):
            start = 0
            for length in _runs(example.position_ids):
                alone = next(p for p in parts if p.input_ids == example.input_ids[start : start + length])
                single = model(input_ids=torch.tensor([alone.input_ids]), use_cache=False).logits[0]
                torch.testing.assert_close(packed_logits[row, start : start + length], single, rtol=1e-4, atol=1e-5)
                start += length


def _runs(position_ids: list[int] | None) -> list[int]:
    assert position_ids is not None
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return [b - a for a, b in zip(starts, starts[1:])]
