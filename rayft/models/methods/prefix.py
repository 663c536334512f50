"""Prefix tuning through peft: trained key/value vectors for `num_virtual_tokens` positions in every layer.

Causal LMs only: peft 0.21's sequence-classification path looks for a `past_key_values`
argument that transformers 5 renamed, and refuses every model (the config rejects the pair).
"""

from __future__ import annotations

from peft import PeftModel, PrefixTuningConfig
from transformers import PreTrainedModel

from rayft.config import PrefixMethod
from rayft.models.methods.context import MethodContext, wrap_with_peft


def apply_prefix(model: PreTrainedModel, method: PrefixMethod, context: MethodContext) -> PeftModel:
    config = PrefixTuningConfig(
        task_type=context.task_type,
        num_virtual_tokens=method.num_virtual_tokens,
        prefix_projection=method.prefix_projection,
        encoder_hidden_size=method.encoder_hidden_size,
        modules_to_save=method.modules_to_save,
    )
    return wrap_with_peft(model, config)
