"""Classification by a causal LM, constrained to the label set: score every label, take the best.

Each label is scored as the log-likelihood of exactly what training teaches the model to write
after the prompt (response_prefix + label + EOS), summed over its tokens. The argmax over labels
is the prediction. Unlike free generation this never produces a value outside the label set,
handles labels that share a prefix ('pos' / 'positive': the EOS decides), and costs one forward
pass per (example, label) pair instead of a decoding loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


def label_continuations(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], response_prefix: str) -> list[list[int]]:
    """The token ids training puts after the prompt for each label (see data/formats.py, data/tokenize.py)."""
    return [list(tokenizer(response_prefix + label, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id] for label in labels]


@torch.no_grad()
def label_log_likelihoods(
    model: nn.Module, prompts: Sequence[list[int]], continuations: Sequence[list[int]], pad_id: int, batch_size: int
) -> torch.Tensor:
    """(examples, labels) summed log-probabilities of each continuation after each prompt."""
    device = next(model.parameters()).device
    scores = torch.empty((len(prompts), len(continuations)), dtype=torch.float64)
    pairs = [(e, l) for e in range(len(prompts)) for l in range(len(continuations))]
    rows_per_batch = max(1, batch_size) * len(continuations)
    for start in range(0, len(pairs), rows_per_batch):
        chunk = pairs[start : start + rows_per_batch]
        sequences = [prompts[e] + continuations[l] for e, l in chunk]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, (e, l) in enumerate(chunk):
            first = len(prompts[e])  # position of the first continuation token
            targets = torch.tensor(continuations[l])
            predicted_from = log_probs[row, first - 1 : first - 1 + len(targets)]
            scores[e, l] = predicted_from.gather(1, targets[:, None]).sum().item()
    return scores


def predict_labels(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    labels: Sequence[str],
    response_prefix: str,
    batch_size: int,
) -> list[str]:
    """The most likely label for each prompt (ties: the earlier label)."""
    if not prompts:
        return []
    scores = label_log_likelihoods(model, prompts, label_continuations(tokenizer, labels, response_prefix), tokenizer.pad_token_id, batch_size)
    return [labels[index] for index in scores.argmax(dim=1).tolist()]
