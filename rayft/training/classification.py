"""The optimizer step's forward/backward for a classification head (through the engine, like
loop.forward_backward for causal LMs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rayft.training.engines import Engine


def classification_forward_backward(
    engine: Engine, micro_batches: list[dict[str, torch.Tensor]], device: torch.device
) -> torch.Tensor:
    """Accumulate the gradients of one step; returns its (detached) mean cross-entropy per example.

    Each micro-batch's summed loss is divided by the examples of the whole step, so accumulation
    weighs every example equally, like one big batch (the head's own loss is a per-batch mean).
    Under DDP, gradients are all-reduced once, on the last micro-batch.
    """
    step_examples = sum(len(batch["labels"]) for batch in micro_batches)
    total = torch.zeros((), device=device)
    for index, batch in enumerate(micro_batches):
        with engine.accumulating(last=index == len(micro_batches) - 1):
            inputs = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with engine.autocast():
                logits = engine.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            loss = F.cross_entropy(logits.float(), inputs["labels"], reduction="sum") / step_examples
            engine.backward(loss)
        total += loss.detach()
    return total
