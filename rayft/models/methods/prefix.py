"""Prefix tuning through peft: trained key/value vectors for `num_virtual_tokens` positions in every layer.

The model needs past key values (decoders do; peft refuses encoders such as BERT at the first
forward, so the builder refuses them up front).
"""

from __future__ import annotations

import inspect

from peft import PeftModel, PrefixTuningConfig
from transformers import PreTrainedModel

from rayft.config import PrefixMethod
from rayft.models.methods.context import MethodContext, MethodError, wrap_with_peft


def apply_prefix(model: PreTrainedModel, method: PrefixMethod, context: MethodContext) -> PeftModel:
    if not _accepts_past_key_values(model):
        raise MethodError(
            f"method.type: prefix tuning needs a model that takes past key values; {type(model).__name__} does not "
            "(use prompt, lora, ia3 or adapter)"
        )
    config = PrefixTuningConfig(
        task_type=context.task_type,
        num_virtual_tokens=method.num_virtual_tokens,
        prefix_projection=method.prefix_projection,
        encoder_hidden_size=method.encoder_hidden_size,
        modules_to_save=method.modules_to_save,
    )
    return wrap_with_peft(model, config)


def _accepts_past_key_values(model: PreTrainedModel) -> bool:
    """The test peft applies at forward time: the model's (or its backbone's) forward takes past_key_values."""
    if "past_key_values" in inspect.signature(model.forward).parameters:
        return True
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return backbone is not None and "past_key_values" in inspect.signature(backbone.forward).parameters
