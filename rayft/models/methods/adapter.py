"""Bottleneck adapters (Houlsby et al., 2019) after the attention and feed-forward sub-layers of every block.

peft has no bottleneck adapter, so it is written here, as small as the idea: one module per
sub-layer (down-projection, activation, up-projection initialised to zero, residual), attached
as a child of the sub-layer and applied to its output by a forward hook. The base model keeps
its class, forward, generate and state-dict keys; at initialisation the model computes exactly
what the base computes.

Saved as two files next to the tokenizer: the trained tensors (adapters and modules_to_save)
and a small JSON spec; `load_adapters` attaches them to a freshly loaded base model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.activations import ACT2FN

from rayft.config import AdapterMethod
from rayft.models.methods.context import MethodContext, MethodError, trained_tensors

ADAPTER_ATTR = "bottleneck_adapter"
WEIGHTS_FILE = "bottleneck_adapters.safetensors"
SPEC_FILE = "bottleneck_adapters.json"
SPEC_ATTR = "rayft_bottleneck_spec"
_ATTENTION = ("self_attn", "attn", "attention")
_FEED_FORWARD = ("mlp", "feed_forward", "ffn", "output")  # BERT's feed-forward ends in the block's `output`
CLASSIFIER_HEADS = ("classifier", "score")  # the names peft trains for SEQ_CLS


class BottleneckAdapter(nn.Module):
    """h + up(act(down(h))); `up` starts at zero, so the adapter starts as the identity."""

    def __init__(self, hidden: int, size: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.activation = ACT2FN[activation]
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.up(self.activation(self.down(hidden_states)))


@dataclass(frozen=True)
class AdapterSpec:
    size: int
    activation: str
    trained_modules: list[str] = field(default_factory=list)
    """Base modules trained in full: modules_to_save plus, for classification, the head."""
    base_model_name_or_path: str = ""


def _adapt_output(module: nn.Module, args: Any, output: Any) -> Any:
    adapter = getattr(module, ADAPTER_ATTR)
    if isinstance(output, tuple):  # attention returns (hidden states, attention weights, ...)
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def adapted_sublayers(model: nn.Module) -> Iterator[nn.Module]:
    """The attention and feed-forward sub-layers of each block: children named like attention and like
    feed-forward of the same module (llama/qwen2/mistral `self_attn`+`mlp`, gpt2 `attn`+`mlp`, BERT `attention`+`output`)."""
    for module in model.modules():
        children = dict(module.named_children())
        attention = next((children[name] for name in _ATTENTION if name in children), None)
        feed_forward = next((children[name] for name in _FEED_FORWARD if name in children), None)
        if attention is not None and feed_forward is not None:
            yield attention
            yield feed_forward


def apply_adapter(model: nn.Module, method: AdapterMethod, context: MethodContext) -> nn.Module:
    heads = [name for name in CLASSIFIER_HEADS if hasattr(model, name)] if context.task_type == "SEQ_CLS" else []
    spec = AdapterSpec(
        method.size, method.activation, [*(method.modules_to_save or []), *heads], str(getattr(model, "name_or_path", ""))
    )
    return attach_adapters(model, spec)


def attach_adapters(model: nn.Module, spec: AdapterSpec) -> nn.Module:
    """Freeze the base, add an adapter after every attention and feed-forward sub-layer, unfreeze spec.trained_modules."""
    sublayers = list(adapted_sublayers(model))
    if not sublayers:
        raise MethodError(f"method.type: found no blocks with attention and feed-forward sub-layers in {type(model).__name__}")
    model.requires_grad_(False)
    hidden = model.config.hidden_size
    device = next(model.parameters()).device
    for sublayer in sublayers:
        sublayer.add_module(ADAPTER_ATTR, BottleneckAdapter(hidden, spec.size, spec.activation).to(device))
        sublayer.register_forward_hook(_adapt_output)
    for wanted in spec.trained_modules:
        matches = [m for name, m in model.named_modules() if name == wanted or name.endswith(f".{wanted}")]
        if not matches:
            raise MethodError(f"method.modules_to_save: no module named {wanted!r} in {type(model).__name__}")
        for module in matches:
            module.requires_grad_(True)
    setattr(model, SPEC_ATTR, spec)
    return model


def has_adapters(model: nn.Module) -> bool:
    return hasattr(model, SPEC_ATTR)


def save_adapters(model: nn.Module, directory: Path, trained: dict[str, torch.Tensor] | None = None) -> None:
    """Write the trained tensors (adapters and trained modules; `trained` when gathered from ZeRO-3
    shards) and the spec that rebuilds them."""
    directory.mkdir(parents=True, exist_ok=True)
    trained = trained_tensors(model) if trained is None else trained
    save_file({name: tensor.contiguous() for name, tensor in trained.items()}, directory / WEIGHTS_FILE)
    (directory / SPEC_FILE).write_text(json.dumps(asdict(getattr(model, SPEC_ATTR)), indent=2) + "\n")


def load_adapters(model: nn.Module, directory: str | Path) -> nn.Module:
    """Attach the adapters saved in `directory` to `model` (the base they were trained on) and load their weights."""
    directory = Path(directory)
    spec = AdapterSpec(**json.loads((directory / SPEC_FILE).read_text()))
    attach_adapters(model, spec)
    saved = load_file(directory / WEIGHTS_FILE)
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(saved) != expected:
        raise MethodError(f"{directory / WEIGHTS_FILE}: tensors do not match the adapters built on {type(model).__name__}")
    model.load_state_dict(saved, strict=False)
    return model
