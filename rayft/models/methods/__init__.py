"""Fine-tuning methods: one module each, registered by `method.type`."""

from rayft.models.methods.registry import apply_method, count_parameters

__all__ = ["apply_method", "count_parameters"]
