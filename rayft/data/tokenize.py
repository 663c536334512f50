"""Tokenize formatted segments into input ids and labels that train only the trained segments.

Each segment is tokenized on its own and the ids concatenated, so mask boundaries are exact
(tokenizing the whole text and re-tokenizing a prefix can disagree at the seam).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from rayft.config import DataConfig
from rayft.data.formats import FormattedExample

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    """Tokens before the last trained segment: the prompt a generation starts from."""
    truncated: bool = False
    """Cut to max_length (data.overlength truncate): counted, so the report shows what the limit did."""


@dataclass(frozen=True)
class Dropped:
    reason: str
    detail: str


def tokenize_segments(
    segments: Sequence[tuple[str, bool]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    overlength: Literal["drop", "truncate", "error"],
    append_eos: bool = True,
) -> TokenizedExample | Dropped:
    """Encode segments; with `append_eos` an EOS token ends the last trained segment and is trained."""
    pieces = [(_encode(tokenizer, text), trained) for text, trained in segments]
    if append_eos:  # EOS belongs to the last trained segment: the answer ends there
        last_ids, last_trained = pieces[-1] if pieces else ([], False)
        if last_trained:
            pieces[-1] = (last_ids + [tokenizer.eos_token_id], True)
        else:
            pieces.append(([tokenizer.eos_token_id], True))
    if not any(trained and ids for ids, trained in pieces):
        return Dropped("no_trainable_tokens", "nothing to train on after tokenization")
    total = sum(len(ids) for ids, _ in pieces)
    truncated = total > max_length
    if truncated:
        if overlength != "truncate":
            return Dropped("overlength", f"{total} tokens > max_length {max_length}")
        cut = _truncate(pieces, total - max_length)
        if cut is None:
            return Dropped("overlength", f"{total} tokens > max_length {max_length} and the trained part cannot be cut")
        pieces = cut
    input_ids: list[int] = []
    labels: list[int] = []
    prompt_len = 0
    for ids, trained in pieces:
        if trained and ids:
            prompt_len = len(input_ids)
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    return TokenizedExample(input_ids, labels, prompt_len, truncated)


def _truncate(pieces: list[tuple[list[int], bool]], excess: int) -> list[tuple[list[int], bool]] | None:
    """Cut `excess` tokens from the start of the first untrained segment (the far end of the
    prompt); when the text is trained throughout (plain text), keep its beginning instead.
    Never cut into a trained segment of a prompted example: that would train a broken answer."""
    if all(trained for _, trained in pieces):
        ids = [token for piece, _ in pieces for token in piece]
        return [(ids[: len(ids) - excess], True)]  # the text goes on: its end (and EOS) is cut
    first_prompt = next(i for i, (_, trained) in enumerate(pieces) if not trained)
    ids, _ = pieces[first_prompt]
    if len(ids) <= excess:
        return None
    return [*pieces[:first_prompt], (ids[excess:], False), *pieces[first_prompt + 1 :]]


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def tokenize_formatted(example: FormattedExample, tokenizer: PreTrainedTokenizerBase, data: DataConfig) -> TokenizedExample | Dropped:
    """Tokenize as configured. Chat templates end each assistant turn themselves; every other
    format gets a trained EOS after its answer."""
    return tokenize_segments(example.segments, tokenizer, data.max_length, data.overlength, append_eos=data.format != "chat")
