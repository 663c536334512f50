"""Prompt tuning through peft: `num_virtual_tokens` trained input embeddings prepended to every input."""

from __future__ import annotations

from peft import PeftModel, PromptTuningConfig, PromptTuningInit
from transformers import PreTrainedModel

from rayft.config import PromptMethod
from rayft.models.methods.context import MethodContext, MethodError, wrap_with_peft


def apply_prompt(model: PreTrainedModel, method: PromptMethod, context: MethodContext) -> PeftModel:
    from_text = method.init == "text"
    if from_text and context.tokenizer_path is None:
        raise MethodError("method.init_text: prompt initialisation from text needs the tokenizer's path")
    config = PromptTuningConfig(
        task_type=context.task_type,
        num_virtual_tokens=method.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if from_text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=method.init_text if from_text else None,
        tokenizer_name_or_path=context.tokenizer_path if from_text else None,
        modules_to_save=method.modules_to_save,
    )
    return wrap_with_peft(model, config)
