"""Load (or build) the base model and its tokenizer.

The driver resolves the model once (`resolve_base_model`) so that a bad path fails before any
worker starts, and a tiny model is built once and saved, so every worker loads identical weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rayft.config import ModelConfig, TinyModelSpec, UserInputError


class ModelLoadError(UserInputError):
    """The configured model or tokenizer cannot be found or loaded."""


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, need_eos: bool = True) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it can pad.

    Tokenizers without a pad token reuse EOS for padding; labels on padding are masked by
    position (not by token id), so the EOS that ends each response is still trained.
    A classification head generates nothing (`need_eos=False`): an encoder's tokenizer without
    EOS (BERT) then uses its separator as the end-of-sequence mark.
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None and not need_eos and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"tokenizer {name_or_path!r} has no EOS token; responses could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_tiny_model(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised causal LM of the given shape, seeded so every build is identical."""
    config = AutoConfig.for_model(
        spec.arch,
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,  # qwen2/mistral default to 32/8 KV heads, which a tiny width cannot hold
        intermediate_size=spec.intermediate or 4 * spec.hidden,
        max_position_embeddings=spec.max_position,
        initializer_range=spec.initializer_range,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    if spec.arch == "gpt2":
        config.n_inner = spec.intermediate or 4 * spec.hidden
        config.n_positions = spec.max_position
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return AutoModelForCausalLM.from_config(config)


def resolve_base_model(model: ModelConfig, run_dir: Path) -> str:
    """Return a path or hub id every worker can load; fail here, in the driver, if there is none.

    A tiny model is built and saved (with its byte-level tokenizer) under `run_dir/base_model`,
    which also makes LoRA checkpoints loadable later through `peft.PeftModel.from_pretrained`.
    """
    if model.tiny is not None:
        target = run_dir / "base_model"
        if not (target / "config.json").is_file():
            tokenizer = load_tokenizer(model.tokenizer) if model.tokenizer else ByT5Tokenizer()
            build_tiny_model(model.tiny, tokenizer).save_pretrained(target)
            tokenizer.save_pretrained(target)
        return str(target)
    assert model.name_or_path is not None
    local = Path(model.name_or_path).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelLoadError(
            f"model.name_or_path: {str(local)!r} is not a model directory (no config.json); "
            "point it at a directory written by save_pretrained or at a hub id"
        )
    try:
        AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"model.name_or_path: cannot load {model.name_or_path!r} ({_first_line(err)}); "
            "give a local model directory or a Hugging Face hub id you can reach"
        ) from None
    return str(local) if local.exists() else model.name_or_path


def configured_tokenizer(model: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer a run would use, without building or loading the model."""
    need_eos = model.head == "causal_lm"
    if model.tokenizer:
        return load_tokenizer(model.tokenizer, model.trust_remote_code, need_eos)
    if model.tiny is not None:
        return ByT5Tokenizer()
    assert model.name_or_path is not None
    try:
        return load_tokenizer(model.name_or_path, model.trust_remote_code, need_eos)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model.name_or_path: cannot load a tokenizer from {model.name_or_path!r} ({_first_line(err)})") from None


def tokenizer_source(model: ModelConfig, base_path: str) -> str:
    return model.tokenizer or base_path


def load_causal_lm(path: str, trust_remote_code: bool = False, attn_implementation: str | None = None) -> PreTrainedModel:
    """fp32 weights (engines choose the compute precision); attention as configured, else transformers' default."""
    return AutoModelForCausalLM.from_pretrained(
        path, trust_remote_code=trust_remote_code, dtype=torch.float32, attn_implementation=attn_implementation
    )


def load_with_head(model: ModelConfig, path: str, labels: list[str] | None, pad_token_id: int) -> PreTrainedModel:
    """The base as the configured head: a causal LM, or a classifier with one output per label
    (the same call in training and `rayft eval`, so both build the same module)."""
    if model.head == "sequence_classification":
        assert labels is not None, "a classification head needs the label set"
        return load_sequence_classifier(path, labels, pad_token_id, model.trust_remote_code, model.attn_implementation)
    return load_causal_lm(path, model.trust_remote_code, model.attn_implementation)


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them.

    Non-reentrant checkpointing (PyTorch's recommended mode): gradients reach adapters inside a
    block even when its inputs do not require grad (frozen embeddings under LoRA) without input hooks.
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_sequence_classifier(
    path: str, labels: list[str], pad_token_id: int, trust_remote_code: bool = False, attn_implementation: str | None = None
) -> PreTrainedModel:
    """The base with a freshly initialised classification head of one output per label; the label
    names go into the model config (id2label/label2id), so every saved model carries them.
    Decoder bases classify from the last non-padding token, so their config needs the pad id.
    Attention as configured (model.attn_implementation), as for a causal LM."""
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        trust_remote_code=trust_remote_code,
        dtype=torch.float32,
        attn_implementation=attn_implementation,
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model


def model_hidden_size(path: str, trust_remote_code: bool = False) -> int | None:
    """The model's width from its config (None when the config names none)."""
    return getattr(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), "hidden_size", None)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
