"""Maps `method.type` to the function that turns a base model into a trainable one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from rayft.models.methods.adapter import apply_adapter
from rayft.models.methods.context import MethodContext
from rayft.models.methods.full import apply_full
from rayft.models.methods.ia3 import apply_ia3
from rayft.models.methods.lora import apply_lora
from rayft.models.methods.prefix import apply_prefix
from rayft.models.methods.prompt import apply_prompt

METHODS: dict[str, Callable[[Any, Any, MethodContext], nn.Module]] = {
    "full": apply_full,
    "lora": apply_lora,
    "prefix": apply_prefix,
    "prompt": apply_prompt,
    "ia3": apply_ia3,
    "adapter": apply_adapter,
}


def apply_method(model: nn.Module, method: Any, context: MethodContext | None = None) -> nn.Module:
    """Apply the configured method; afterwards exactly the method's parameters (and its
    modules_to_save, and for classification the head) require grad."""
    return METHODS[method.type](model, method, context or MethodContext())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
