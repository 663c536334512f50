"""Tokenize (prompt, response) pairs into input ids and labels masked to the response.

Prompt and response are tokenized separately and concatenated, so the mask boundary is exact
(tokenizing the full text and re-tokenizing the prompt can disagree at the seam).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int


@dataclass(frozen=True)
class Dropped:
    reason: str
    detail: str


def tokenize_example(
    prompt: str,
    response: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    overlength: Literal["drop", "truncate", "error"],
) -> TokenizedExample | Dropped:
    """Encode one example; the EOS token ends the response and is trained."""
    prompt_ids = _encode(tokenizer, prompt)
    response_ids = _encode(tokenizer, response) + [tokenizer.eos_token_id]
    total = len(prompt_ids) + len(response_ids)
    if total > max_length:
        if overlength != "truncate":
            return Dropped("overlength", f"{total} tokens > max_length {max_length}")
        keep_prompt = max_length - len(response_ids)
        if keep_prompt < 1:
            # Cutting here would remove the prompt entirely or the response's end: drop instead.
            return Dropped("overlength", f"response alone has {len(response_ids)} tokens > max_length {max_length}")
        prompt_ids = prompt_ids[-keep_prompt:]  # keep the end of the prompt, nearest the answer
    if not response_ids:
        return Dropped("no_trainable_tokens", "response is empty after tokenization")
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return TokenizedExample(prompt_ids + response_ids, labels, len(prompt_ids))


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
