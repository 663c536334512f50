"""The PEFT methods the integration tier trains on 2 workers, under both engines."""

from __future__ import annotations

from typing import Any

# method, learning rate, file the checkpoint's model/ must hold
METHODS: dict[str, tuple[dict[str, Any], float, str]] = {
    "lora-dora": ({"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear", "use_dora": True}, 5e-3, "adapter_model.safetensors"),
    "prefix": ({"type": "prefix", "num_virtual_tokens": 8, "prefix_projection": True, "encoder_hidden_size": 32}, 2e-2, "adapter_model.safetensors"),
    "adapter": ({"type": "adapter", "size": 16}, 5e-3, "bottleneck_adapters.safetensors"),
    "ia3": ({"type": "ia3"}, 5e-2, "adapter_model.safetensors"),
    "prompt": ({"type": "prompt", "num_virtual_tokens": 8, "init": "text", "init_text": "Instruction: answer"}, 5e-2, "adapter_model.safetensors"),
}
