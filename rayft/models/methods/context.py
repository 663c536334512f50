"""What a method builder needs to know besides its config: the task and where the tokenizer is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn

from rayft.config import UserInputError

TaskType = Literal["CAUSAL_LM", "SEQ_CLS"]


class MethodError(UserInputError):
    """The method cannot be applied to this model (a module it names is missing, the model lacks a feature)."""


@dataclass(frozen=True)
class MethodContext:
    task_type: TaskType = "CAUSAL_LM"
    """peft's task type: SEQ_CLS also trains and saves the classification head."""
    tokenizer_path: str | None = None
    """Needed only by prompt tuning initialised from text."""

    @classmethod
    def for_head(cls, classification_head: bool, tokenizer_path: str | None = None) -> MethodContext:
        return cls("SEQ_CLS" if classification_head else "CAUSAL_LM", tokenizer_path)


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor that trains, by parameter name (what a partly trained model saves and resumes from)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def wrap_with_peft(model: nn.Module, config: PeftConfig) -> PeftModel:
    """get_peft_model, after checking that every named target module exists and before checking the same
    of `modules_to_save` (peft skips unknown names silently as long as one name matches)."""
    targets = getattr(config, "target_modules", None)
    if isinstance(targets, (list, set)):
        names = [name for name, _ in model.named_modules()]
        for target in sorted(targets):
            if not any(name == target or name.endswith(f".{target}") for name in names):
                raise MethodError(f"method.target_modules: no module named {target!r} in {type(model).__name__}")
    requested = list(config.modules_to_save or [])  # before peft adds the classification head's names
    peft_model = get_peft_model(model, config)
    trained = [name for name, parameter in peft_model.named_parameters() if parameter.requires_grad]
    for module in requested:
        if not any(f"{module}.modules_to_save." in name for name in trained):
            raise MethodError(f"method.modules_to_save: no module named {module!r} in {type(model).__name__}")
    return peft_model
