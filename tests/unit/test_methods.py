"""Every method on a tiny llama: exact parameter counts against closed forms, freezing, and the
adapter's behaviour (identity at init, hooks in forward and generate, save and load)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer

from rayft.config import (
    AdapterMethod,
    IA3Method,
    LoraMethod,
    ModelConfig,
    PrefixMethod,
    PromptMethod,
    TinyModelSpec,
)
from rayft.models.loading import build_tiny_model, load_causal_lm, load_sequence_classifier, resolve_base_model
from rayft.models.methods import MethodContext, MethodError, apply_method, count_parameters
from rayft.models.methods.adapter import load_adapters, save_adapters
from rayft.models.methods.check import check_method

V, H, L, I = 384, 32, 2, 128  # ByT5 vocab, hidden, layers, intermediate
BASE = 2 * V * H + L * (4 * H * H + 3 * H * I + 2 * H) + H  # see test_models.py
LLAMA_LINEAR = [(H, H)] * 4 + [(H, I), (H, I), (I, H)]  # (in, out): q, k, v, o, gate, up, down


@pytest.fixture
def tiny(byte_tokenizer: ByT5Tokenizer):
    return build_tiny_model(TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I), byte_tokenizer)


def _counts(model, method, context: MethodContext | None = None) -> tuple[int, int]:
    return count_parameters(apply_method(model, method, context))


def test_dora_adds_one_magnitude_per_output_feature(tiny) -> None:
    r = 4
    trainable, total = _counts(tiny, LoraMethod(r=r, target_modules="all-linear", use_dora=True))
    expected = L * sum(r * (fan_in + fan_out) + fan_out for fan_in, fan_out in LLAMA_LINEAR)
    assert (trainable, total) == (expected, BASE + expected)


def test_rslora_changes_the_scale_not_the_count(tiny) -> None:
    model = apply_method(tiny, LoraMethod(r=4, alpha=8, target_modules=["q_proj"], use_rslora=True))
    assert count_parameters(model)[0] == L * 4 * (H + H)
    assert model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(8 / math.sqrt(4))


def test_prefix_trains_keys_and_values_for_every_layer(tiny) -> None:
    n = 5
    assert _counts(tiny, PrefixMethod(num_virtual_tokens=n))[0] == L * 2 * H * n


def test_prefix_projection_trains_the_mlp(tiny) -> None:
    n, hidden = 5, 16
    embedding, first, second = n * H, H * hidden + hidden, hidden * (L * 2 * H) + L * 2 * H
    trainable, total = _counts(tiny, PrefixMethod(num_virtual_tokens=n, prefix_projection=True, encoder_hidden_size=hidden))
    assert (trainable, total) == (embedding + first + second, BASE + embedding + first + second)


def test_prompt_tuning_trains_one_embedding_per_virtual_token(tiny) -> None:
    assert _counts(tiny, PromptMethod(num_virtual_tokens=7)) == (7 * H, BASE + 7 * H)


def test_prompt_init_from_text_copies_the_token_embeddings(tiny, tmp_path: Path, byte_tokenizer) -> None:
    byte_tokenizer.save_pretrained(tmp_path)
    embeddings = tiny.get_input_embeddings().weight.detach().clone()
    model = apply_method(tiny, PromptMethod(num_virtual_tokens=4, init="text", init_text="Answer:"), MethodContext(tokenizer_path=str(tmp_path)))
    ids = byte_tokenizer("Answer:", add_special_tokens=False)["input_ids"][:4]
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight, embeddings[ids])


def test_ia3_trains_one_scale_per_adapted_feature(tiny) -> None:
    # peft's llama default: k_proj and v_proj scale their outputs, down_proj (feed-forward) its input
    assert _counts(tiny, IA3Method())[0] == L * (H + H + I)
    custom = IA3Method(target_modules=["q_proj", "up_proj"], feedforward_modules=["up_proj"])
    assert _counts(build_tiny_model(TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I), ByT5Tokenizer()), custom)[0] == L * (H + H)


def test_adapter_counts_two_bottlenecks_per_block(tiny) -> None:
    size = 8
    per_block = 2 * (H * size + size + size * H + H)
    assert _counts(tiny, AdapterMethod(size=size)) == (L * per_block, BASE + L * per_block)


def test_modules_to_save_train_a_copy_of_the_module(tiny) -> None:
    lora = L * 4 * (H + H)
    trainable, total = _counts(tiny, LoraMethod(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    assert (trainable, total) == (lora + V * H, BASE + lora + V * H)  # peft keeps the original head beside the copy


@pytest.mark.parametrize(
    ("method", "trained"),
    [
        (LoraMethod(r=2, target_modules="all-linear", use_dora=True), ("lora_A", "lora_B", "lora_magnitude_vector")),
        (PrefixMethod(num_virtual_tokens=3, prefix_projection=True), ("prompt_encoder",)),
        (PromptMethod(num_virtual_tokens=3), ("prompt_encoder",)),
        (IA3Method(), ("ia3_l",)),
        (AdapterMethod(size=4, modules_to_save=["norm"]), ("bottleneck_adapter", "model.norm.")),
    ],
    ids=["dora", "prefix", "prompt", "ia3", "adapter"],
)
def test_only_the_methods_parameters_train(tiny, method, trained) -> None:
    model = apply_method(tiny, method)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert names and all(any(part in name for part in trained) for name in names)


def test_adapter_starts_as_the_identity_and_runs_in_generate(tiny) -> None:
    ids = torch.randint(3, 200, (2, 9))
    before = tiny.eval()(input_ids=ids).logits
    model = apply_method(tiny, AdapterMethod(size=4))
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    plain = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "bottleneck_adapter.up" in name:
                parameter.fill_(0.05)
    assert not torch.allclose(model(input_ids=ids).logits, before)
    assert not torch.equal(model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0), plain)


def test_adapter_saves_and_loads_onto_a_fresh_base(tmp_path: Path) -> None:
    base = resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I)), tmp_path)
    model = apply_method(load_causal_lm(base), AdapterMethod(size=4, activation="gelu"))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 0.1)
    save_adapters(model, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {"bottleneck_adapters.safetensors", "bottleneck_adapters.json"}
    reloaded = load_adapters(load_causal_lm(base), tmp_path / "adapter")
    ids = torch.randint(3, 200, (1, 11))
    torch.testing.assert_close(reloaded.eval()(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_sequence_classification_trains_the_head_with_every_partial_method(tmp_path: Path) -> None:
    base = resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I)), tmp_path)
    head = H * 3  # llama's score layer has no bias
    without_lm_head = BASE - V * H
    seq_cls = MethodContext("SEQ_CLS")
    for method, own in [(LoraMethod(r=2, target_modules=["q_proj"]), L * 2 * (H + H)), (AdapterMethod(size=4), L * 2 * (2 * H * 4 + 4 + H))]:
        model = apply_method(load_sequence_classifier(base, ["a", "b", "c"], 0), method, seq_cls)
        trainable, total = count_parameters(model)
        copies = head if method.type == "lora" else 0  # peft trains a copy of the head; the adapter trains it in place
        assert (trainable, total) == (own + head, without_lm_head + head + own + copies), method.type
        assert model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_check_method_fails_fast_on_names_the_model_lacks(tmp_path: Path) -> None:
    base = resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=H, layers=L, heads=4, intermediate=I)), tmp_path)
    model = ModelConfig(tiny=TinyModelSpec())
    with pytest.raises(MethodError, match=r"^method\.target_modules: no module named 'q_projj' in LlamaForCausalLM"):
        check_method(model, LoraMethod(target_modules=["q_proj", "q_projj"]), base, base, False)
    with pytest.raises(MethodError, match=r"^method\.modules_to_save: no module named 'headd'"):
        check_method(model, LoraMethod(modules_to_save=["headd"]), base, base, False)
    with pytest.raises(MethodError, match=r"^method\.modules_to_save: no module named 'headd'"):
        check_method(model, AdapterMethod(modules_to_save=["headd"]), base, base, False)


@pytest.mark.parametrize("method", [PromptMethod(num_virtual_tokens=4), PrefixMethod(num_virtual_tokens=4)], ids=["prompt", "prefix"])
def test_validation_loss_of_virtual_token_methods_equals_the_models_own_loss(tiny, method) -> None:
    """Pins the logits offset: prompt tuning returns logits for its virtual tokens too, and the
    validation loss must score only the real positions (as peft's own loss does)."""
    from rayft.data.batching import Example, collate
    from rayft.evaluate.validation import loss_sums

    model = apply_method(tiny, method).eval()
    generator = torch.Generator().manual_seed(0)
    examples = [Example(ids := torch.randint(3, 200, (10,), generator=generator).tolist(), [-100] * 4 + ids[4:], 4, "") for _ in range(3)]
    batch = collate(examples, 0)
    with torch.no_grad():
        expected = model(**batch).loss.item()
    loss_sum, tokens = loss_sums(model, examples, 0, batch_size=8)
    assert loss_sum / tokens == pytest.approx(expected, rel=1e-5)
