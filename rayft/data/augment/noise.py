"""Token-level noise: word dropout, adjacent-word swaps, synonyms from a user's list.

Written by hand: the libraries that do this (nlpaug, textattack) pull in WordNet downloads or
models; these three ops are a few lines each. Words are whitespace-separated; the whitespace
between them (newlines included) is kept, so the text keeps its layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayft.augment_config import SynonymOp, WordDropoutOp, WordSwapOp, synonyms_problem
from rayft.config import ConfigError, DataConfig
from rayft.data.augment.rows import chosen, copy_row, field_texts, row_rng, target_columns, with_copies, with_texts

_WORD = re.compile(r"(\S+)")
_EDGES = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)

Change = Callable[[str, np.random.Generator], str]


def _split(text: str) -> tuple[list[str], list[str]]:
    """Words and gaps: gaps[0] leads, gaps[i] comes before words[i] (i >= 1), gaps[-1] trails."""
    parts = _WORD.split(text)
    return parts[1::2], parts[0::2]


def _join(words: list[str], gaps: list[str]) -> str:
    return gaps[0] + "".join(word + gap for word, gap in zip(words, gaps[1:]))


def word_dropout(text: str, rng: np.random.Generator, rate: float) -> str:
    """Drop each word with probability `rate`; one word (drawn) stays when all would go."""
    words, gaps = _split(text)
    if not words:
        return text
    keep = rng.random(len(words)) >= rate
    if not keep.any():
        keep[rng.integers(len(words))] = True
    kept = np.flatnonzero(keep)
    return gaps[0] + words[kept[0]] + "".join(gaps[i] + words[i] for i in kept[1:]) + gaps[-1]


def word_swap(text: str, rng: np.random.Generator, swaps: int) -> str:
    """Swap `swaps` randomly chosen adjacent pairs, one after another (gaps stay in place)."""
    words, gaps = _split(text)
    if len(words) < 2:
        return text
    for _ in range(swaps):
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return _join(words, gaps)


def replace_synonyms(text: str, rng: np.random.Generator, synonyms: dict[str, list[str]], rate: float) -> str:
    """Replace each listed word (matched without case and edge punctuation) with probability `rate`
    by one of its alternatives, keeping the punctuation and the capitalisation of the original."""
    words, gaps = _split(text)
    for i, word in enumerate(words):
        lead, core, trail = _EDGES.match(word).groups()  # type: ignore[union-attr]  # the pattern matches any string
        alternatives = synonyms.get(core.lower())
        if not alternatives or rng.random() >= rate:
            continue
        words[i] = lead + _match_case(alternatives[int(rng.integers(len(alternatives)))], core) + trail
    return _join(words, gaps)


def _match_case(replacement: str, original: str) -> str:
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def load_synonyms(spec: SynonymOp, key: str) -> dict[str, list[str]]:
    """The op's synonym mapping (read from its JSON file when given a path), keyed in lower case."""
    mapping: Any = spec.synonyms
    if isinstance(mapping, str):
        path = Path(mapping).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key}: synonym file {mapping!r} not found")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{key}: {mapping}: not valid JSON: {err}") from None
        problem = synonyms_problem(mapping)
        if problem:
            raise ConfigError(f"{key}: {path}: {problem}")
    return {word.lower(): list(alternatives) for word, alternatives in mapping.items()}


@dataclass(frozen=True)
class NoiseJob:
    """One token-noise op, resolved for the workers: which rows, how many copies, which texts, what change."""

    index: int
    label: str
    p: float
    copies: int
    offset: int
    columns: list[str]
    change: Change


def noise_job(index: int, spec: WordDropoutOp | WordSwapOp | SynonymOp, label: str, offset: int, data: DataConfig) -> NoiseJob:
    change: Change
    if isinstance(spec, WordDropoutOp):
        change = partial(word_dropout, rate=spec.rate)
    elif isinstance(spec, WordSwapOp):
        change = partial(word_swap, swaps=spec.swaps)
    else:
        synonyms = load_synonyms(spec, f"data.augment.{index}.synonyms")
        change = partial(replace_synonyms, synonyms=synonyms, rate=spec.rate)
    return NoiseJob(index, label, spec.p, spec.copies, offset, target_columns(spec.fields, data), change)


def noisy_record(record: dict[str, Any], job: NoiseJob, rng: np.random.Generator) -> dict[str, Any]:
    """The record with the job's change applied to each of its texts, in column order."""
    return with_texts(record, {key: job.change(text, rng) for key, text in field_texts(record, job.columns)})


class NoiseBatch:
    """Ray Data transform (tasks): the batch's rows plus every changed noise copy.
    A copy equal to its source (nothing dropped, swapped words equal) is not emitted: it would
    only repeat the row; augmentation_counts reports it as discarded."""

    def __init__(self, jobs: list[NoiseJob], seed: int) -> None:
        self.jobs = jobs
        self.seed = seed

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        copies: list[dict[str, Any]] = []
        for source in batch.to_dict("records"):
            record = json.loads(source["record"])
            file_index, line = int(source["file_index"]), int(source["line"])
            for job in self.jobs:
                if not chosen(self.seed, job.index, file_index, line, job.p):
                    continue
                for number in range(1, job.copies + 1):
                    changed = noisy_record(record, job, row_rng(self.seed, job.index, file_index, line, number))
                    if changed != record:
                        copies.append(copy_row(source, changed, job.offset + number, job.label))
        return with_copies(batch, copies)
