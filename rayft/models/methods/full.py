"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from transformers import PreTrainedModel

from rayft.config import FullMethod


def apply_full(model: PreTrainedModel, method: FullMethod) -> PreTrainedModel:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model
