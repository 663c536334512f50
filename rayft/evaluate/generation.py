"""Batched generation for evaluation that returns only the new text (the prompt is stripped).

Prompts are left-padded within a batch so every row's continuation starts at the same column;
decoding is greedy (num_beams=1) or beam search, and stops at EOS or after max_new_tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask of a left-padded batch."""
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


@torch.no_grad()
def generate_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    num_beams: int = 1,
) -> list[str]:
    """Decode each tokenized prompt until EOS or max_new_tokens; returns the stripped new text."""
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        input_ids, attention_mask = left_pad(prompts[start : start + batch_size], tokenizer.pad_token_id)
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=num_beams,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in output[:, input_ids.shape[1] :]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers
