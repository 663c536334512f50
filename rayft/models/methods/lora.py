"""LoRA through peft: frozen base weights plus a trained low-rank update B @ A per adapted matrix."""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from rayft.config import LoraMethod


def apply_lora(model: PreTrainedModel, method: LoraMethod) -> PeftModel:
    # 'auto' lets peft pick its per-architecture default (q_proj/v_proj for llama, c_attn for gpt2).
    target = None if method.target_modules == "auto" else method.target_modules
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=target,
    )
    return get_peft_model(model, config)
