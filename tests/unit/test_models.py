from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer

from rayft.config import FullMethod, LoraMethod, ModelConfig, TinyModelSpec
from rayft.models.loading import ModelLoadError, build_tiny_model, load_causal_lm, load_tokenizer, load_with_head, resolve_base_model
from rayft.models.methods import apply_method, count_parameters

V, H, L, I = 384, 32, 2, 128  # ByT5 vocab, hidden, layers, intermediate


def _llama_params() -> int:
    per_layer = 4 * H * H + 3 * H * I + 2 * H  # q,k,v,o + gate,up,down + two RMSNorms
    return 2 * V * H + L * per_layer + H  # embeddings + untied head + layers + final norm


def test_tiny_llama_has_the_closed_form_parameter_count(byte_tokenizer: ByT5Tokenizer) -> None:
    model = build_tiny_model(TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I), byte_tokenizer)
    assert count_parameters(apply_method(model, FullMethod())) == (_llama_params(), _llama_params())


def test_tiny_build_is_seeded(byte_tokenizer: ByT5Tokenizer) -> None:
    spec = TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I)
    a, b = build_tiny_model(spec, byte_tokenizer), build_tiny_model(spec, byte_tokenizer)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(
    ("targets", "adapted"),
    [
        ("auto", [(H, H), (H, H)]),  # peft's llama default: q_proj, v_proj
        ("all-linear", [(H, H)] * 4 + [(H, I), (H, I), (I, H)]),
        (["q_proj"], [(H, H)]),
    ],
)
def test_lora_trains_exactly_r_times_in_plus_out_per_matrix(byte_tokenizer, targets, adapted) -> None:
    r = 4
    model = build_tiny_model(TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I), byte_tokenizer)
    peft_model = apply_method(model, LoraMethod(r=r, target_modules=targets))
    trainable, total = count_parameters(peft_model)
    expected = L * sum(r * (fan_in + fan_out) for fan_in, fan_out in adapted)
    assert trainable == expected
    assert total == _llama_params() + expected
    assert all("lora_" in name for name, p in peft_model.named_parameters() if p.requires_grad)


def test_gpt2_tiny_and_lora_auto(byte_tokenizer: ByT5Tokenizer) -> None:
    model = build_tiny_model(TinyModelSpec(arch="gpt2", hidden=H, layers=L, heads=4, intermediate=I), byte_tokenizer)
    assert model.config.n_embd == H and model.config.n_layer == L and model.config.n_inner == I
    trainable, _ = count_parameters(apply_method(model, LoraMethod(r=2)))
    assert trainable == L * 2 * (H + 3 * H)  # c_attn: H -> 3H


def test_tiny_base_model_is_saved_once_and_loads(tmp_path: Path) -> None:
    config = ModelConfig(tiny=TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I))
    path = resolve_base_model(config, tmp_path)
    assert Path(path) == tmp_path / "base_model"
    assert isinstance(load_tokenizer(path), ByT5Tokenizer)
    assert count_parameters(load_causal_lm(path)) == (_llama_params(), _llama_params())


def test_unknown_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"^model\.name_or_path: cannot load 'no-such-org/no-such-model'"):
        resolve_base_model(ModelConfig(name_or_path="no-such-org/no-such-model"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"is not a model directory \(no config.json\)"):
        resolve_base_model(ModelConfig(name_or_path=str(tmp_path / "empty")), tmp_path)


@pytest.mark.parametrize("head", ["causal_lm", "sequence_classification"])
def test_configured_attention_reaches_both_heads(tmp_path: Path, head: str) -> None:
    """Pins model.attn_implementation for classifiers too: load_with_head once passed it only to
    the causal LM, so a classification run silently kept transformers' default kernel."""
    spec = TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I)
    path = resolve_base_model(ModelConfig(tiny=spec), tmp_path)
    labels = ["neg", "pos"] if head == "sequence_classification" else None
    loaded = {
        kernel: load_with_head(ModelConfig(tiny=spec, head=head, attn_implementation=kernel), path, labels, 0)
        for kernel in (None, "eager", "sdpa")
    }
    assert {kernel: model.config._attn_implementation for kernel, model in loaded.items()} == {None: "sdpa", "eager": "eager", "sdpa": "sdpa"}
    assert type(loaded["eager"]).__name__ == ("LlamaForSequenceClassification" if labels else "LlamaForCausalLM")
