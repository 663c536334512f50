"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from transformers import PreTrainedModel

from rayft.config import FullMethod
from rayft.models.methods.context import MethodContext


def apply_full(model: PreTrainedModel, method: FullMethod, context: MethodContext) -> PreTrainedModel:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model
