"""LoRA through peft: frozen base weights plus a trained low-rank update B @ A per adapted matrix
(optionally rank-stabilised scaling, or DoRA's magnitude/direction split)."""

from __future__ import annotations

from peft import LoraConfig, PeftModel
from transformers import PreTrainedModel

from rayft.config import LoraMethod
from rayft.models.methods.context import MethodContext, wrap_with_peft


def apply_lora(model: PreTrainedModel, method: LoraMethod, context: MethodContext) -> PeftModel:
    # 'auto' lets peft pick its per-architecture default (q_proj/v_proj for llama, c_attn for gpt2).
    target = None if method.target_modules == "auto" else method.target_modules
    config = LoraConfig(
        task_type=context.task_type,
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=target,
        use_rslora=method.use_rslora,
        use_dora=method.use_dora,
        modules_to_save=method.modules_to_save,
    )
    return wrap_with_peft(model, config)
