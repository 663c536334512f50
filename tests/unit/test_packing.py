from __future__ import annotations

import random
import time

import torch
from transformers import ByT5Tokenizer

from rayft.config import TinyModelSpec
from rayft.data.batching import Example, collate
from rayft.data.packing import first_fit_decreasing, pack_examples
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


def _linear_first_fit_decreasing(lengths: list[int], max_length: int) -> list[list[int]]:
    """The reference: the former implementation, scanning every bin per item (quadratic)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for index in order:
        target = next((b for b, free in enumerate(room) if free >= lengths[index]), None)
        if target is None:
            bins.append([index])
            room.append(max_length - lengths[index])
        else:
            bins[target].append(index)
            room[target] -= lengths[index]
    return [sorted(members) for members in bins]


def test_tree_first_fit_decreasing_gives_the_linear_scans_bins() -> None:
    """Pins first-fit-decreasing semantics after the O(n log n) rewrite: the same bins, in the same
    order, as the linear scan, for random inputs with ties, zero lengths and items over max_length."""
    rng = random.Random(0)
    for trial in range(300):
        max_length = rng.randint(1, 64)
        lengths = [rng.randint(0, max_length + (3 if trial % 4 == 0 else 0)) for _ in range(rng.randint(0, 80))]
        assert first_fit_decreasing(lengths, max_length) == _linear_first_fit_decreasing(lengths, max_length), (lengths, max_length)
    lengths = [rng.randint(8, 512) for _ in range(2000)]
    assert first_fit_decreasing(lengths, 512) == _linear_first_fit_decreasing(lengths, 512)


def test_packing_100k_lengths_is_fast_and_valid() -> None:
    """Regression: scanning every bin per item took ~7 s for 20k lengths (minutes for 100k). Pins
    that 100,000 lengths pack in well under that, each index exactly once, no bin over max_length."""
    rng = random.Random(1)
    lengths = [rng.randint(8, 512) for _ in range(100_000)]
    start = time.perf_counter()
    bins = first_fit_decreasing(lengths, 512)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"{elapsed:.1f} s"
    assert sorted(index for members in bins for index in members) == list(range(100_000))
    assert max(sum(lengths[i] for i in members) for members in bins) <= 512
    assert len(bins) >= -(-sum(lengths) // 512)
