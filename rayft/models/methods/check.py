"""Fail fast on a method that cannot apply to the model, in the driver, before any worker starts."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from rayft.config import ModelConfig
from rayft.models.methods.context import MethodContext, MethodError
from rayft.models.methods.registry import apply_method


def check_method(model: ModelConfig, method: Any, base_path: str, tokenizer_path: str, classification_head: bool) -> None:
    """Apply the method to the base model built on the meta device (no weights, milliseconds).

    A target or modules_to_save name that the model lacks, or a model the method cannot adapt,
    is then one clear error here instead of a failure on every worker after Ray has started.
    """
    config = AutoConfig.from_pretrained(base_path, trust_remote_code=model.trust_remote_code)
    # The label set is found on Ray later; the head's width decides no module name, so any will do.
    auto = AutoModelForSequenceClassification if classification_head else AutoModelForCausalLM
    with torch.device("meta"):
        skeleton = auto.from_config(config, trust_remote_code=model.trust_remote_code)
    context = MethodContext.for_head(classification_head, tokenizer_path)
    try:
        apply_method(skeleton, method, context)
    except MethodError:
        raise
    except ValueError as err:  # peft's complaints: no module matched, a bad combination
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MethodError(f"method: cannot apply {method.type} to {type(skeleton).__name__}: {first}") from None
