"""Fine-tuning methods: one module each, registered by `method.type`."""

from rayft.models.methods.context import MethodContext, MethodError
from rayft.models.methods.registry import apply_method, count_parameters

__all__ = ["MethodContext", "MethodError", "apply_method", "count_parameters"]
