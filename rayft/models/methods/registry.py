"""Maps `method.type` to the function that turns a base model into a trainable one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from rayft.models.methods.full import apply_full
from rayft.models.methods.lora import apply_lora

METHODS: dict[str, Callable[[Any, Any], nn.Module]] = {
    "full": apply_full,
    "lora": apply_lora,
}


def apply_method(model: nn.Module, method: Any) -> nn.Module:
    """Apply the configured method; afterwards exactly the method's parameters require grad."""
    return METHODS[method.type](model, method)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
