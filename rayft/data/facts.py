"""What the counts and the quality report need of a split, gathered batch by batch.

A split's report columns (STAT_COLUMNS, copy, augmented) are streamed in batches into counters,
whose size is bounded by the distinct reasons, labels and lengths, plus two 8-byte fingerprints
per formatted input row (exact duplicates and train overlap are questions about every row's
text). The fingerprints are summarised into counts and dropped (summarise_fingerprints), so what
reaches the report, and on Ray the driver, does not grow with the rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from rayft.data.split import TRAIN


@dataclass
class SplitFacts:
    rows: int = 0
    """Input rows (copy 0) of the split, whether or not they could train."""
    examples: int = 0
    """Rows that train or evaluate, augmented copies included."""
    kept: int = 0
    """Input rows that train or evaluate."""
    truncated: int = 0
    """Kept input rows cut to max_length (data.overlength truncate)."""
    any_overlength: bool = False
    """Some row, an augmented copy included, is over max_length (data.overlength error stops here)."""
    filtered: Counter[str] = field(default_factory=Counter)
    """Input rows dropped at tokenization, by reason."""
    filtered_copies: Counter[str] = field(default_factory=Counter)
    """Augmented copies dropped at tokenization, by augmentation op."""
    empty_roles: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    """Labels of the input rows that have one."""
    input_lengths: Counter[int] = field(default_factory=Counter)
    """Token lengths of the kept input rows."""
    example_lengths: Counter[int] = field(default_factory=Counter)
    """Token lengths of every kept row, copies included: what packing packs."""
    _text_hashes: list[np.ndarray] = field(default_factory=list)
    _norm_hashes: list[np.ndarray] = field(default_factory=list)

    def add(self, batch: pd.DataFrame) -> None:
        """Take in one batch of per-row facts (STAT_COLUMNS, copy, and augmented where copies exist)."""
        dropped = (batch["drop_reason"] != "").to_numpy()
        original = (batch["copy"] == 0).to_numpy()
        inputs = batch[original]
        kept_inputs = batch[original & ~dropped]
        self.rows += len(inputs)
        self.examples += int((~dropped).sum())
        self.kept += len(kept_inputs)
        self.truncated += int(kept_inputs["truncated"].astype(bool).sum())
        self.any_overlength = self.any_overlength or bool(batch["drop_reason"].str.startswith("overlength").any())
        self.filtered.update(reason.partition(":")[0] for reason in inputs.loc[inputs["drop_reason"] != "", "drop_reason"])
        if "augmented" in batch.columns:
            self.filtered_copies.update(batch.loc[~original & dropped, "augmented"])
        self.empty_roles.update(role for roles in inputs["empty_roles"] if roles for role in roles.split(","))
        self.labels.update(str(label) for label in inputs["label"] if label != "")
        self.input_lengths.update(int(n) for n in kept_inputs["length"])
        self.example_lengths.update(int(n) for n in batch.loc[~dropped, "length"])
        formatted = inputs[inputs["text_hash"] != 0]
        self._text_hashes.append(formatted["text_hash"].to_numpy(dtype=np.int64))
        self._norm_hashes.append(formatted["norm_hash"].to_numpy(dtype=np.int64))

    def without_fingerprints(self) -> SplitFacts:
        """The counters alone: what is small enough to send anywhere."""
        return replace(self, _text_hashes=[], _norm_hashes=[])

    @property
    def text_hashes(self) -> np.ndarray:
        """Exact-text fingerprints of the formatted input rows."""
        return _joined(self._text_hashes)

    @property
    def norm_hashes(self) -> np.ndarray:
        """Normalised-text fingerprints of the formatted input rows."""
        return _joined(self._norm_hashes)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) > 1:  # fold into one array so the next call does not copy again
        parts[:] = [np.concatenate(parts)]
    return parts[0] if parts else np.zeros(0, dtype=np.int64)


def expanded(lengths: Counter[int]) -> list[int]:
    """Every length as often as it occurs, in increasing order."""
    return [length for length in sorted(lengths) for _ in range(lengths[length])]


@dataclass
class Fingerprints:
    """What the fingerprints say: duplicates inside each split and rows that leak train text."""

    exact_duplicates: dict[str, int] = field(default_factory=dict)
    normalised_duplicates: dict[str, int] = field(default_factory=dict)
    overlap_with_train: dict[str, int] = field(default_factory=dict)
    """Rows (not distinct texts) of the held-out splits whose normalised text is also in train."""


@dataclass
class DataFacts:
    splits: dict[str, SplitFacts]
    fingerprints: Fingerprints


def summarise_fingerprints(splits: dict[str, SplitFacts]) -> DataFacts:
    """Count duplicates and leakage; the result keeps the counters without the fingerprints.
    prepare_datasets runs this as a Ray task next to the data (see pipeline.py)."""
    train_texts = splits[TRAIN].norm_hashes if TRAIN in splits else np.zeros(0, dtype=np.int64)
    fingerprints = Fingerprints(
        exact_duplicates={name: _duplicates(facts.text_hashes) for name, facts in splits.items()},
        normalised_duplicates={name: _duplicates(facts.norm_hashes) for name, facts in splits.items()},
        overlap_with_train={
            name: int(np.isin(facts.norm_hashes, train_texts).sum()) for name, facts in splits.items() if name != TRAIN and len(facts.norm_hashes)
        },
    )
    return DataFacts({name: facts.without_fingerprints() for name, facts in splits.items()}, fingerprints)


def _duplicates(fingerprints: np.ndarray) -> int:
    return len(fingerprints) - len(np.unique(fingerprints))
