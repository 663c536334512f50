"""Pack several tokenized examples into one sequence of at most max_length tokens.

Position ids restart at 0 for every example. transformers (>= 4.5x masking utils) reads
restarting position ids, when no attention mask is given and no cache is used, as packed
sequences and builds a block-diagonal causal mask: no token attends across examples. The loop
therefore passes position_ids, no attention_mask and use_cache=False for packed batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rayft.data.batching import Example


@dataclass(frozen=True)
class PackingStats:
    examples: int
    sequences: int
    real_tokens: int
    slots: int

    @property
    def efficiency(self) -> float:
        """Real tokens per available slot (sequences x max_length)."""
        return self.real_tokens / self.slots if self.slots else 0.0


def first_fit_decreasing(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Bins of indices whose lengths sum to at most max_length; longest first, ties by index, so
    the same lengths always give the same bins. Members of a bin keep their original order.

    Each item goes into the first (lowest-numbered) bin with room, found in O(log n) by descending
    a max-tree over the bins' free room: O(n log n) in all, where scanning every bin per item took
    seconds at 20k examples. Bins not yet opened hold max_length, so the first bin with room is an
    open one when any fits, else the next new one, exactly as a linear scan would choose."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    size = 1
    while size < max(1, len(lengths)):
        size *= 2
    room = [max_length] * (2 * size)  # room[size + b]: bin b's free room; room[node]: max of its children
    bins: list[list[int]] = []
    for index in order:
        length = lengths[index]
        if room[1] >= length:
            node = 1
            while node < size:  # the leftmost leaf with room >= length
                node = 2 * node if room[2 * node] >= length else 2 * node + 1
            target = node - size
        else:  # longer than max_length: a bin of its own, as a linear scan would open
            target = len(bins)
            node = size + target
        if target == len(bins):
            bins.append([])
        bins[target].append(index)
        room[node] -= length
        node //= 2
        while node and room[node] != (largest := max(room[2 * node], room[2 * node + 1])):
            room[node] = largest  # an unchanged maximum leaves every ancestor as it is
            node //= 2
    return [sorted(members) for members in bins]


def packing_stats(lengths: Sequence[int], max_length: int) -> PackingStats:
    bins = first_fit_decreasing(lengths, max_length)
    return PackingStats(len(lengths), len(bins), sum(lengths), len(bins) * max_length)


def pack_examples(examples: Sequence[Example], max_length: int) -> tuple[list[Example], PackingStats]:
    """Packed Examples keep the concatenated ids and labels, `position_ids` restarting per part,
    and no single reference (generation metrics use the unpacked validation split)."""
    lengths = [len(example.input_ids) for example in examples]
    packed = []
    for members in first_fit_decreasing(lengths, max_length):
        parts = [examples[i] for i in members]
        packed.append(
            Example(
                input_ids=[t for part in parts for t in part.input_ids],
                labels=[t for part in parts for t in part.labels],
                prompt_len=0,
                reference="",
                position_ids=[p for part in parts for p in range(len(part.input_ids))],
            )
        )
    return packed, packing_stats(lengths, max_length)
