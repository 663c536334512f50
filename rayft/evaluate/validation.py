"""Evaluate the validation split across workers.

Each worker handles every world-th example and contributes sums (loss over tokens, token
counts, matches, examples); the sums are all-reduced, so the result is exact regardless of how
unevenly the examples divide (no means of means).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayft.config import EvalConfig
from rayft.data.tokenize import IGNORE_INDEX
from rayft.evaluate.generation import generate_answers
from rayft.evaluate.metrics import exact_match, perplexity
from rayft.data.batching import Example, collate


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


@torch.no_grad()
def evaluate_validation(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    eval_config: EvalConfig,
    batch_size: int,
    rank: int,
    world_size: int,
) -> dict[str, float]:
    """eval_loss (token-weighted), perplexity and exact_match over the whole validation split."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mine = list(examples[rank::world_size])
    loss_sum, token_count = 0.0, 0.0
    for start in range(0, len(mine), batch_size):
        batch = collate(mine[start : start + batch_size], tokenizer.pad_token_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        logits = logits[:, -batch["input_ids"].shape[1] :]  # prompt tuning returns logits for its virtual tokens too
        shifted_labels = batch["labels"][:, 1:]
        losses = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), shifted_labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        loss_sum += losses.item()
        token_count += (shifted_labels != IGNORE_INDEX).sum().item()

    matches, answered = 0.0, 0.0
    if "exact_match" in eval_config.metrics:
        answerable = [example for example in examples if example.reference and example.prompt_len > 0]
        chosen = answerable[: eval_config.max_generate_examples][rank::world_size]
        generator = getattr(model, "module", model)  # unwrap DDP; peft models generate themselves
        answers = generate_answers(
            generator,
            tokenizer,
            [example.input_ids[: example.prompt_len] for example in chosen],
            eval_config.generate.max_new_tokens,
            batch_size,
        )
        matches = float(sum(exact_match(answer, example.reference) for answer, example in zip(answers, chosen)))
        answered = float(len(chosen))

    loss_sum, token_count, matches, answered = _all_reduce_sum([loss_sum, token_count, matches, answered], device)
    if was_training:
        model.train()
    eval_loss = loss_sum / max(token_count, 1.0)
    metrics = {"eval_loss": eval_loss}
    if "perplexity" in eval_config.metrics:
        metrics["perplexity"] = perplexity(eval_loss)
    if "exact_match" in eval_config.metrics and answered > 0:
        metrics["exact_match"] = matches / answered
    return metrics
