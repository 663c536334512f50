"""(IA)^3 through peft: one trained vector per adapted module rescales its output (attention keys and
values) or, for feed-forward modules, its input."""

from __future__ import annotations

from peft import IA3Config, PeftModel
from transformers import PreTrainedModel

from rayft.config import IA3Method
from rayft.models.methods.context import MethodContext, wrap_with_peft


def apply_ia3(model: PreTrainedModel, method: IA3Method, context: MethodContext) -> PeftModel:
    auto = method.target_modules == "auto"  # peft's per-architecture default (k, v and the down projection for llama)
    config = IA3Config(
        task_type=context.task_type,
        target_modules=None if auto else method.target_modules,
        feedforward_modules=None if auto else method.feedforward_modules,
        modules_to_save=method.modules_to_save,
    )
    return wrap_with_peft(model, config)
