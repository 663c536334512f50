"""The experiment schema: one typed, validated description of a run.

Every field has help text and a validator; unknown keys are errors. Loading never touches
Ray, so a typo fails in milliseconds with a message naming the dotted key.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from rayft.augment_config import AUGMENT_OPS, AugmentSpec, check_augment_specs


class UserInputError(ValueError):
    """A problem in what the user gave (config, data, model path): reported in one line, exit 2."""


class ConfigError(UserInputError):
    """A config problem the user must fix; the message names the dotted key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------- model


class TinyModelSpec(_Section):
    """A small randomly initialised model built from a config: no download, seconds to build."""

    arch: Literal["llama", "qwen2", "mistral", "gpt2"] = Field(
        "llama", description="transformers model_type of the tiny model."
    )
    layers: int = Field(2, ge=1, description="Number of transformer blocks.")
    hidden: int = Field(64, ge=8, description="Hidden (model) width.")
    heads: int = Field(4, ge=1, description="Attention heads; must divide `hidden`.")
    intermediate: int | None = Field(None, ge=8, description="Feed-forward width; default 4 x hidden.")
    max_position: int = Field(512, ge=16, description="Longest sequence the model accepts.")
    initializer_range: float = Field(
        0.2,
        gt=0,
        description=(
            "Std of the random init. Larger than transformers' 0.02: after the final norm, the "
            "logits of a frozen random output layer are bounded by about std * hidden, and at 0.02 "
            "that bound keeps adapter-only training from ever becoming confident."
        ),
    )
    seed: int = Field(0, description="Seed of the random init (the same on every worker).")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> TinyModelSpec:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


class ModelConfig(_Section):
    name_or_path: str | None = Field(
        None, description="Hugging Face hub id or local directory of a causal LM."
    )
    tiny: TinyModelSpec | None = Field(None, description="Build a tiny model instead of loading one.")
    tokenizer: str | None = Field(
        None, description="Tokenizer id or path; defaults to the model's (byte-level for tiny)."
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub.")
    attn_implementation: Literal["sdpa", "eager"] | None = Field(
        None,
        description=(
            "Attention kernel: 'sdpa' (PyTorch's fused scaled_dot_product_attention) or 'eager'; "
            "unset lets transformers choose (sdpa wherever the architecture supports it)."
        ),
    )
    head: Literal["causal_lm", "sequence_classification"] = Field(
        "causal_lm",
        description=(
            "What the model outputs: 'causal_lm' generates the answer as text; 'sequence_classification' "
            "puts a classification head on the base (Auto*ForSequenceClassification, encoder or decoder) "
            "with one output per label found in the data (data.format: classification)."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelConfig:
        if (self.name_or_path is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.name_or_path or model.tiny")
        return self


# ---------------------------------------------------------------------------- method


class FullMethod(_Section):
    """Every weight trains."""

    type: Literal["full"] = "full"


class _PartialMethod(_Section):
    """A method that trains few parameters on a frozen base."""

    modules_to_save: list[str] | None = Field(
        None,
        description=(
            "Base modules trained in full and saved with the method's weights (names match the end of "
            "a module's dotted name, e.g. [lm_head]). The classification head is added automatically."
        ),
    )

    @field_validator("modules_to_save")
    @classmethod
    def _named_modules(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not name.strip() for name in value)):
            raise ValueError("must name at least one module, without empty names")
        return value


def _non_empty_targets(value: str | list[str]) -> str | list[str]:
    if isinstance(value, list) and not value:
        raise ValueError("must name at least one module")
    return value


class LoraMethod(_PartialMethod):
    """Low-rank adapters through peft; only the adapters train."""

    type: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, description="Rank of the update B @ A.")
    alpha: float = Field(16.0, gt=0, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: Literal["auto", "all-linear"] | list[str] = Field(
        "auto",
        description=(
            "Modules to adapt: 'auto' (peft's default for the architecture), 'all-linear', "
            "or a list of module names."
        ),
    )
    use_rslora: bool = Field(
        False, description="Rank-stabilised LoRA: scale the update by alpha / sqrt(r) instead of alpha / r."
    )
    use_dora: bool = Field(
        False,
        description="DoRA: split each adapted weight into magnitude and direction; adds one trained magnitude per output feature.",
    )

    _targets = field_validator("target_modules")(_non_empty_targets)


class PrefixMethod(_PartialMethod):
    """Prefix tuning through peft: trained key/value vectors prepended in every attention layer."""

    type: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(20, ge=1, description="Prefix length: key/value pairs added to every layer.")
    prefix_projection: bool = Field(
        False,
        description=(
            "Reparameterise the prefix through an MLP (embedding -> encoder_hidden_size -> tanh -> every layer's "
            "keys and values), which trains more stably; the MLP is trained and checkpointed."
        ),
    )
    encoder_hidden_size: int | None = Field(
        None, ge=1, description="Hidden width of the reparameterisation MLP; default the model's width."
    )

    @model_validator(mode="after")
    def _hidden_needs_projection(self) -> PrefixMethod:
        if self.encoder_hidden_size is not None and not self.prefix_projection:
            raise ValueError("encoder_hidden_size: only used with prefix_projection: true")
        return self


class PromptMethod(_PartialMethod):
    """Prompt tuning through peft: trained embeddings of virtual tokens prepended to the input."""

    type: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(20, ge=1, description="Number of trained virtual tokens.")
    init: Literal["random", "text"] = Field(
        "random", description="Start the virtual tokens random, or as the embeddings of init_text's tokens."
    )
    init_text: str | None = Field(None, description="Text whose token embeddings start the virtual tokens (init: text).")

    @model_validator(mode="after")
    def _text_for_text_init(self) -> PromptMethod:
        if self.init == "text" and not (self.init_text and self.init_text.strip()):
            raise ValueError("init_text: required (non-empty) when init is 'text'")
        if self.init == "random" and self.init_text is not None:
            raise ValueError("init_text: only used with init: text")
        return self


class IA3Method(_PartialMethod):
    """(IA)^3 through peft: trained vectors rescaling the keys, values and feed-forward activations."""

    type: Literal["ia3"] = "ia3"
    target_modules: Literal["auto"] | list[str] = Field(
        "auto", description="Modules whose outputs (or, for feed-forward modules, inputs) are rescaled; 'auto': peft's default."
    )
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules are feed-forward (scaled on their input); needed with a target list."
    )

    _targets = field_validator("target_modules")(_non_empty_targets)

    @model_validator(mode="after")
    def _feedforward_within_targets(self) -> IA3Method:
        if self.target_modules == "auto":
            if self.feedforward_modules is not None:
                raise ValueError("feedforward_modules: set target_modules too (auto picks both)")
            return self
        if self.feedforward_modules is None:
            raise ValueError("feedforward_modules: required when target_modules is a list (may be [])")
        outside = sorted(set(self.feedforward_modules) - set(self.target_modules))
        if outside:
            raise ValueError(f"feedforward_modules: {outside} not in target_modules")
        return self


class AdapterMethod(_PartialMethod):
    """Bottleneck adapters after the attention and feed-forward sub-layers of every block."""

    type: Literal["adapter"] = "adapter"
    size: int = Field(16, ge=1, description="Bottleneck width: hidden -> size -> hidden.")
    activation: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="Non-linearity in the bottleneck.")


MethodConfig = Annotated[
    FullMethod | LoraMethod | PrefixMethod | PromptMethod | IA3Method | AdapterMethod, Field(discriminator="type")
]
METHOD_CLASSES = (FullMethod, LoraMethod, PrefixMethod, PromptMethod, IA3Method, AdapterMethod)
VIRTUAL_TOKEN_METHODS = frozenset({"prefix", "prompt"})


# ---------------------------------------------------------------------------- data


class SplitConfig(_Section):
    val: float = Field(0.1, ge=0, lt=1, description="Fraction of rows held out for validation.")
    test: float = Field(0.0, ge=0, lt=1, description="Fraction held out for the final test.")
    seed: int = Field(0, description="Seed of the split; the same seed gives the same split.")
    stratify_by: str | None = Field(
        None, description="Column whose values keep their proportions in every split (e.g. label)."
    )
    time_column: str | None = Field(
        None, description="Column of times (ISO dates or numbers): the latest rows become test, then validation."
    )

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be below 1, got {self.val + self.test}")
        if self.stratify_by and self.time_column:
            raise ValueError("choose stratify_by or time_column, not both")
        return self


class KFoldConfig(_Section):
    k: int = Field(ge=2, description="Folds: the non-test rows are cut into k parts, each the validation split once.")
    fold: int | None = Field(
        None, ge=0, description="Train this fold only; unset trains all k and reports mean and std."
    )

    @model_validator(mode="after")
    def _fold_in_range(self) -> KFoldConfig:
        if self.fold is not None and self.fold >= self.k:
            raise ValueError(f"fold must be below k ({self.k}), got {self.fold}")
        return self


@dataclass(frozen=True)
class TaskFormat:
    """The columns a task format reads and how it prompts for the trained part.

    `roles` maps each role to whether it is required; `answer` is the role trained as the
    response (None: the whole text trains, or, for chat, every assistant turn).
    `template_short` prompts rows whose optional role is empty.
    """

    roles: dict[str, bool]
    answer: str | None
    template: str
    template_short: str | None = None


TASK_FORMATS: dict[str, TaskFormat] = {
    "instruction": TaskFormat(
        {"instruction": True, "input": False, "output": True}, "output",
        "Instruction: {instruction}\nInput: {input}\nResponse:", "Instruction: {instruction}\nResponse:",
    ),
    "qa": TaskFormat(
        {"question": True, "context": False, "answer": True}, "answer",
        "Context: {context}\nQuestion: {question}\nAnswer:", "Question: {question}\nAnswer:",
    ),
    "classification": TaskFormat({"text": True, "label": True}, "label", "Text: {text}\nLabel:"),
    "summarization": TaskFormat({"document": True, "summary": True}, "summary", "Document: {document}\nSummary:"),
    "text": TaskFormat({"text": True}, None, ""),
    "chat": TaskFormat({"messages": True}, None, ""),
}


class DataConfig(_Section):
    train: str | list[str] = Field(
        description="Training data: a path, a glob, or a list of them (.jsonl, .json, .csv, .parquet, saved HF dataset)."
    )
    weights: list[float] | None = Field(
        None,
        description=(
            "Mix the `train` entries in these proportions (e.g. [0.8, 0.2]: task data and replay data). "
            "Training rows of over-represented entries are left out (counted as filtered 'mixed_out'); none repeat."
        ),
    )
    validation: str | list[str] | None = Field(
        None, description="Explicit validation files; when unset, `split.val` carves them from train."
    )
    format: Literal["instruction", "qa", "classification", "summarization", "text", "chat"] = Field(
        "instruction", description="Task format: which columns are read and how they become a prompt and a response."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Column name per role where it differs from the role's name, e.g. {output: response}.",
    )
    template: str | None = Field(
        None, description="Prompt template with {role} placeholders (and any other string column); default per format."
    )
    template_short: str | None = Field(
        None, description="Prompt for rows whose optional role (input, context) is empty; default per format."
    )
    response_prefix: str = Field(
        " ", description="Text between the prompt and the response (trained as part of the response)."
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template for the chat format when the tokenizer has none (a plain one by default)."
    )
    max_length: int = Field(512, ge=8, description="Longest tokenized example (prompt + response + EOS).")
    overlength: Literal["drop", "truncate", "error"] = Field(
        "drop", description="What to do with longer examples; truncate cuts the prompt, never the whole response."
    )
    packing: bool = Field(
        False, description="Pack several training examples per sequence (attention stays inside each example)."
    )
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="Stop when more than this fraction of rows is quarantined."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    kfold: KFoldConfig | None = Field(None, description="k-fold cross-validation instead of split.val.")
    augment: list[AugmentSpec] = Field(
        default_factory=list,
        description=(
            "Augmentation of the training split only, one entry per op (see rayft/augment_config.py): "
            "word_dropout, word_swap, synonym, paraphrase, template. Augmented rows are marked and counted."
        ),
    )

    @field_validator("train", "validation")
    @classmethod
    def _non_empty_paths(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and (value == "" or value == []):
            raise ValueError("must name at least one file")
        return value

    @field_validator("template", "template_short")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            value.format_map(_AnyKey())
        except (ValueError, IndexError) as err:
            raise ValueError(f"not a valid format string: {err}") from None
        return value

    @field_validator("fields")
    @classmethod
    def _fields_are_roles(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        task_format = info.data.get("format")
        if task_format is None:
            return value
        roles = TASK_FORMATS[task_format].roles
        for role in value:
            if role not in roles:
                raise ValueError(f"{role!r} is not a role of format {task_format!r} (roles: {', '.join(roles)})")
        return value

    @model_validator(mode="after")
    def _one_weight_per_source(self) -> DataConfig:
        if self.weights is None:
            return self
        entries = 1 if isinstance(self.train, str) else len(self.train)
        if len(self.weights) != entries or any(w <= 0 for w in self.weights):
            raise ValueError(f"weights: need {entries} positive weights, one per data.train entry, got {self.weights}")
        return self

    @model_validator(mode="after")
    def _kfold_owns_validation(self) -> DataConfig:
        if self.kfold is not None and self.validation is not None:
            raise ValueError("kfold: the folds are the validation splits; remove data.validation or data.kfold")
        if self.kfold is not None and self.split.time_column is not None:
            raise ValueError(
                "kfold: folds are drawn without regard to time, so rows later than a fold's validation rows would "
                f"train; remove data.kfold or data.split.time_column ({self.split.time_column!r})"
            )
        return self

    @model_validator(mode="after")
    def _augment_fits_format(self) -> DataConfig:
        check_augment_specs(self.augment, self.task.roles, self.fields)
        return self

    @property
    def task(self) -> TaskFormat:
        return TASK_FORMATS[self.format]

    def column(self, role: str) -> str:
        return self.fields.get(role, role)


class _AnyKey(dict):
    """format_map target that accepts every placeholder, for template validation."""

    def __missing__(self, key: str) -> str:
        return ""


# ---------------------------------------------------------------------------- train


class EarlyStoppingConfig(_Section):
    """Stop after `patience` evaluations in a row without improvement.

    Improvement means better than the best so far by more than `min_delta` in the direction of
    `mode`; a worse (or barely better) value never replaces the best. Evaluations during training
    count (every train.eval_steps), the one before training does not.
    """

    metric: str = Field("eval_loss", description="Reported validation metric to watch (eval_loss, accuracy, rougeL, ...).")
    mode: Literal["min", "max"] = Field("min", description="Whether lower (min) or higher (max) values are better.")
    patience: int = Field(3, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="How much better a value must be to count as an improvement.")


class DeepSpeedSection(_Section):
    """DeepSpeed ZeRO settings; rayft writes the rest of the DeepSpeed config from the experiment."""

    stage: Literal[0, 1, 2, 3] = Field(
        2,
        description=(
            "ZeRO stage: 0 plain data parallel, 1 shards optimizer state across workers, "
            "2 also gradients, 3 also the parameters."
        ),
    )
    offload_optimizer: bool = Field(
        False, description="Keep optimizer state in CPU memory and step it there (ZeRO stage 1-3)."
    )
    offload_params: bool = Field(False, description="Keep parameters in CPU memory between uses (ZeRO stage 3).")
    config: str | None = Field(
        None,
        description=(
            "Path to a DeepSpeed JSON merged with what rayft writes; a key that contradicts the "
            "experiment (batch size, accumulation, clipping, precision, ZeRO stage, optimizer, scheduler) is an error."
        ),
    )

    @field_validator("offload_optimizer")
    @classmethod
    def _optimizer_offload_needs_sharding(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("stage") == 0:
            raise ValueError("needs ZeRO stage 1, 2 or 3 (train.deepspeed.stage is 0)")
        return value

    @field_validator("offload_params")
    @classmethod
    def _param_offload_needs_stage_3(cls, value: bool, info: ValidationInfo) -> bool:
        stage = info.data.get("stage")
        if value and stage is not None and stage != 3:
            raise ValueError(f"needs ZeRO stage 3, where parameters are sharded (train.deepspeed.stage is {stage})")
        return value


class TrainConfig(_Section):
    epochs: float = Field(1.0, gt=0, description="Passes over the training split (fractions allowed).")
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps to run; overrides `epochs` when set."
    )
    lr: float = Field(2.0e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, ge=1, description="Examples per worker per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up.")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up steps; overrides warmup_ratio.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule (transformers' get_scheduler)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not on biases and norms).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip gradients to this norm; null disables.")
    seed: int = Field(0, description="Seed of data order, dropout and adapter init.")
    logging_steps: int = Field(10, ge=1, description="Log loss, lr and tokens/s every N steps.")
    eval_steps: int | None = Field(
        50, ge=1, description="Evaluate on the validation split every N steps (and at start and end)."
    )
    save_steps: int | None = Field(
        100, ge=1, description="Checkpoint every N steps (a final checkpoint is always written)."
    )
    backend: Literal["torch", "deepspeed"] = Field(
        "torch", description="Training engine: torch DDP, or DeepSpeed ZeRO (see train.deepspeed)."
    )
    deepspeed: DeepSpeedSection | None = Field(
        None, validate_default=True, description="DeepSpeed settings (backend deepspeed only; default ZeRO stage 2)."
    )
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "fp32",
        description=(
            "Compute precision: bf16, fp16 (with dynamic loss scaling) or fp32. Where the hardware lacks it "
            "(fp16 on CPU, bf16 on old GPUs) training falls back to fp32 with a warning."
        ),
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="Stop when a validation metric stops improving (needs a validation split)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third more compute."
    )

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_with_its_backend(cls, value: DeepSpeedSection | None, info: ValidationInfo) -> DeepSpeedSection | None:
        backend = info.data.get("backend")
        if backend == "deepspeed":
            return value or DeepSpeedSection()
        if value is not None and backend is not None:
            raise ValueError(f"only used with train.backend=deepspeed (backend is {backend!r}); set it or remove train.deepspeed")
        return value


# ---------------------------------------------------------------------------- eval


@dataclass(frozen=True)
class MetricSpec:
    """A metric users can name in eval.metrics: what it needs and the keys it reports.

    kind: "loss" (from the validation loss), "generation" (answers generated from the prompt and
    compared with the reference), "classification" (labels predicted within the label set).
    The implementations live in rayft.evaluate.registry; config only knows the names.
    """

    kind: Literal["loss", "generation", "classification"]
    keys: tuple[str, ...]
    description: str


METRICS: dict[str, MetricSpec] = {
    "perplexity": MetricSpec("loss", ("perplexity",), "exp(eval_loss)"),
    "exact_match": MetricSpec("generation", ("exact_match",), "SQuAD-normalised exact match (0-1), best over references"),
    "f1": MetricSpec("generation", ("f1",), "SQuAD token F1 (0-1), best over references"),
    "bleu": MetricSpec("generation", ("bleu",), "sacrebleu corpus BLEU (0-100), multi-reference"),
    "chrf": MetricSpec("generation", ("chrf",), "sacrebleu corpus chrF (0-100), multi-reference"),
    "rouge": MetricSpec(
        "generation", ("rouge1", "rouge2", "rougeL", "rougeLsum"),
        "rouge-score F-measures (0-1), mean over examples; rougeLsum splits sentences at newlines",
    ),
    "bertscore": MetricSpec(
        "generation", ("bertscore_precision", "bertscore_recall", "bertscore_f1"),
        "BERTScore with the local encoder in eval.bertscore.model (0-1)",
    ),
    "accuracy": MetricSpec("classification", ("accuracy",), "share of correctly predicted labels"),
    "f1_macro": MetricSpec("classification", ("f1_macro",), "F1 averaged over labels"),
    "f1_micro": MetricSpec("classification", ("f1_micro",), "F1 over all predictions"),
    "precision_macro": MetricSpec("classification", ("precision_macro",), "precision averaged over labels"),
    "recall_macro": MetricSpec("classification", ("recall_macro",), "recall averaged over labels"),
    # Not accuracy in disguise: predictions outside the label set leave precision's denominator and
    # references outside it leave recall's (both equal accuracy only when every value is a label).
    "precision_micro": MetricSpec("classification", ("precision_micro",), "correct predictions over predictions inside the label set"),
    "recall_micro": MetricSpec("classification", ("recall_micro",), "correct predictions over references inside the label set"),
}

DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "instruction": ("perplexity", "exact_match", "rouge"),
    "qa": ("perplexity", "exact_match", "f1"),
    "classification": ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro"),
    "summarization": ("perplexity", "rouge"),
    "text": ("perplexity",),
    "chat": ("perplexity", "rouge", "bleu"),
}
"""eval.metrics when unset, per data.format."""

GENERAL_KEYS = ("general_eval_loss", "general_perplexity")


class GenerateConfig(_Section):
    max_new_tokens: int = Field(32, ge=1, description="Longest generated answer.")
    num_beams: int = Field(1, ge=1, description="1: greedy decoding; more: beam search with this many beams.")


class BertScoreConfig(_Section):
    model: str = Field(description="Local directory of a Hugging Face encoder (e.g. a MiniLM or RoBERTa); nothing is downloaded.")
    layer: int | None = Field(
        None, ge=1, description="Hidden layer whose token embeddings are matched; default the last."
    )
    batch_size: int = Field(32, ge=1, description="Sentences per encoder batch.")


class GeneralEvalConfig(_Section):
    """A general held-out set evaluated next to the task set: its loss rising shows forgetting."""

    files: str | list[str] = Field(description="Paths or globs of the general set (any reader format).")
    format: Literal["instruction", "qa", "classification", "summarization", "text", "chat"] = Field(
        "text", description="Task format of the general set (its loss covers what that format trains)."
    )
    fields: dict[str, str] = Field(default_factory=dict, description="Column name per role where it differs.")

    @field_validator("files")
    @classmethod
    def _non_empty_files(cls, value: str | list[str]) -> str | list[str]:
        if value == "" or value == []:
            raise ValueError("must name at least one file")
        return value


class EvalConfig(_Section):
    metrics: list[str] | None = Field(
        None,
        description=(
            "Validation metrics (names in rayft.config.METRICS); unset: the defaults of data.format "
            "(DEFAULT_METRICS). eval_loss is always computed."
        ),
    )
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    max_generate_examples: int | None = Field(
        64, ge=1, description="Validation examples answered (by generation or label scoring) per evaluation; null: all."
    )
    bertscore: BertScoreConfig | None = Field(None, description="Encoder for the bertscore metric.")
    general: GeneralEvalConfig | None = Field(
        None, description="General held-out set for the forgetting monitor (general_eval_loss, general_perplexity)."
    )
    metric_for_best: str = Field("eval_loss", description="Reported metric that ranks checkpoints.")
    mode: Literal["min", "max"] = Field("min", description="Whether lower or higher metric_for_best is better.")
    test_at_end: bool = Field(
        True,
        description=(
            "When the data has a test split, evaluate the best checkpoint on it once after training "
            "(a short second Ray Train run; the result goes to result.json and eval_test.json/.md)."
        ),
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        unknown = [name for name in value if name not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; valid metrics: {', '.join(METRICS)}")
        return list(dict.fromkeys(value))

    @field_validator("general", mode="before")
    @classmethod
    def _files_shorthand(cls, value: Any) -> Any:
        """`eval.general: path` (or a list of paths) means plain text files."""
        return {"files": value} if isinstance(value, (str, list)) else value


# ---------------------------------------------------------------------------- tune


class SearchDimension(_Section):
    """One searched key: exactly one of uniform / loguniform / int / choice / grid."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uniform: tuple[float, float] | None = Field(None, description="[low, high]: a float drawn uniformly.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], both > 0: a float drawn on a log scale.")
    int_range: tuple[int, int] | None = Field(None, alias="int", description="[low, high]: an integer, both ends included.")
    choice: list[Any] | None = Field(None, description="Values to choose from.")
    grid: list[Any] | None = Field(None, description="Values every one of which is tried (random and grid search).")
    when: dict[str, Any] | None = Field(
        None, description="Search this key only when these dotted keys have these values, e.g. {method.type: lora}."
    )

    @model_validator(mode="after")
    def _one_valid_kind(self) -> SearchDimension:
        kinds = [k for k in ("uniform", "loguniform", "int_range", "choice", "grid") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of uniform, loguniform, int, choice, grid")
        for kind in ("uniform", "loguniform", "int_range"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind.replace('_range', '')} bounds must be ordered low < high, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform bounds must be positive, got {list(self.loguniform)}")
        for kind in ("choice", "grid"):
            if getattr(self, kind) == []:
                raise ValueError(f"{kind} needs at least one value")
        return self


class SchedulerSection(_Section):
    type: Literal["asha", "median", "none"] = Field("asha", description="Early stopping of poor trials.")
    time_attr: Literal["training_iteration", "step"] = Field(
        "training_iteration",
        description=(
            "What grace_period and max_t count: evaluation rounds (reports; the evaluation before training is the first) "
            "or optimizer steps."
        ),
    )
    grace_period: int = Field(1, ge=1, description="No trial stops before this much progress.")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA keeps 1/reduction_factor of trials at each rung.")
    max_t: int | None = Field(None, ge=1, description="Longest a trial runs (ASHA's last rung); default: the whole run.")


class BudgetSection(_Section):
    wall_time_s: float | None = Field(None, gt=0, description="Stop the sweep after this many seconds.")
    worker_hours: float | None = Field(
        None, gt=0, description="Stop the sweep once trials have used this many worker-hours (GPU-hours with use_gpu)."
    )


class BatchSizeSearch(_Section):
    max: int = Field(256, ge=1, description="Largest per-worker batch size tried.")
    memory_gb: float | None = Field(
        None, gt=0,
        description=(
            "CPU: a batch fits when a worker's peak memory stays below this (a CPU cannot report running "
            "out of memory; the process is killed). GPU: unset, the device's own limit decides."
        ),
    )


class TuneSection(_Section):
    num_samples: int = Field(8, ge=1, description="Trials to run (with grid search: repeats of the grid).")
    metric: str = Field("eval_loss", description="Reported metric the search optimises.")
    mode: Literal["min", "max"] = Field("min", description="Whether lower or higher metric is better.")
    space: dict[str, SearchDimension] = Field(description="Dotted config key -> search dimension.")
    search: Literal["optuna", "random", "grid"] = Field("optuna", description="Searcher (Optuna: TPE).")
    seed: int = Field(0, description="Seed of the searcher.")
    startup_trials: int = Field(
        10, ge=1,
        description="Optuna: trials sampled at random before TPE models the results (Optuna's default 10); "
        "a small num_samples leaves TPE few trials to use what it learnt unless this is lower.",
    )
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials at once; default: as many as the cluster's CPUs (or GPUs) fit."
    )
    budget: BudgetSection = Field(default_factory=BudgetSection)
    batch_size_search: BatchSizeSearch | None = Field(
        None, description="Before the sweep, find the largest per-worker train.batch_size that fits; every trial uses it."
    )

    @field_validator("batch_size_search")
    @classmethod
    def _batch_size_found_or_searched(cls, value: BatchSizeSearch | None, info: ValidationInfo) -> BatchSizeSearch | None:
        if value is not None and "train.batch_size" in (info.data.get("space") or {}):
            raise ValueError("sets train.batch_size for every trial; remove train.batch_size from tune.space")
        return value

    @field_validator("space")
    @classmethod
    def _searchable_keys(cls, value: dict[str, SearchDimension]) -> dict[str, SearchDimension]:
        if not value:
            raise ValueError("search at least one key")
        for key in value:
            if key.split(".")[0] in {"name", "run", "tune", "data", "model", "scaling"}:
                raise ValueError(
                    f"{key!r} cannot be searched: search method, train and eval keys (the data is prepared once per sweep)"
                )
        return value


# ---------------------------------------------------------------------------- scaling & run


class ScalingSection(_Section):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel ranks).")
    use_gpu: bool = Field(False, description="Give each worker a GPU.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker; also its torch threads.")


class RunSection(_Section):
    storage_path: str = Field("./runs", description="Where run directories live: <storage_path>/<name>/.")
    max_failures: int = Field(0, ge=0, description="Restarts from the last checkpoint after infrastructure failures.")
    num_checkpoints_to_keep: int | None = Field(
        None, ge=1, description="Keep only the best N checkpoints (by eval.metric_for_best)."
    )
    overwrite: bool = Field(
        False, description="Start over when <storage_path>/<name> holds a finished run (deletes it)."
    )


class ExperimentConfig(_Section):
    name: str = Field(description="Run name: the run directory is <run.storage_path>/<name>.")
    model: ModelConfig
    method: MethodConfig = Field(default_factory=LoraMethod)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    run: RunSection = Field(default_factory=RunSection)
    tune: TuneSection | None = Field(None, description="Hyperparameter sweep (`rayft tune`).")

    @model_validator(mode="after")
    def _space_keys_exist(self) -> ExperimentConfig:
        """Every searched key must take every value it can be given: validate the config with each
        bound and choice applied (dimension by dimension, so the error names the key)."""
        if self.tune is None:
            return self
        base = self.model_dump(mode="json", exclude={"tune"})
        for key, dimension in self.tune.space.items():
            for condition, expected in (dimension.when or {}).items():
                try:
                    ExperimentConfig.model_validate(with_params(base, {condition: expected}))
                except ValidationError as err:
                    problem = _format_validation_error(err).partition(": ")[2]
                    raise ValueError(f"tune.space.{key}.when: {condition} = {expected!r} does not fit the config ({problem})") from None
            def fitted(value: Any) -> Any:
                raw = with_params(base, {**(dimension.when or {}), key: value})
                try:
                    trial = ExperimentConfig.model_validate(raw)
                except ValidationError as err:
                    problem = _format_validation_error(err).partition(": ")[2]
                    raise ValueError(f"tune.space.{key}: value {value!r} does not fit the config ({problem})") from None
                node: Any = trial.model_dump(mode="json")
                for part in key.split("."):
                    node = node[part]
                return node

            for kind in ("uniform", "loguniform", "int_range"):
                for bound in getattr(dimension, kind) or ():
                    fitted(bound)
            # Choices are kept as the config reads them: YAML reads 1.0e15 (no exponent sign) as a
            # string, which the config turns into the float a trial then reports.
            for kind in ("choice", "grid"):
                if getattr(dimension, kind) is not None:
                    setattr(dimension, kind, [fitted(value) for value in getattr(dimension, kind)])
        return self

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or "/" in value or value in {".", ".."}:
            raise ValueError(f"must be a plain directory name, got {value!r}")
        return value

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> ExperimentConfig:
        """Metrics must suit data.format; metric_for_best and early_stopping.metric must be reported."""
        for name in self.metric_names:
            kind = METRICS[name].kind
            if kind == "classification" and self.data.format != "classification":
                raise ValueError(f"eval.metrics: {name!r} needs data.format classification (got {self.data.format!r})")
            if kind == "generation" and self.data.format == "text":
                raise ValueError(f"eval.metrics: {name!r} compares answers with references; data.format 'text' has none")
        if "bertscore" in self.metric_names and self.eval.bertscore is None:
            raise ValueError("eval.bertscore: the bertscore metric needs eval.bertscore.model (a local encoder directory)")
        reported = self.eval_keys
        if self.eval.metric_for_best not in reported:
            raise ValueError(f"eval.metric_for_best: {self.eval.metric_for_best!r} is not reported; choose one of {', '.join(reported)}")
        if self.tune is not None and self.tune.metric not in reported:
            raise ValueError(f"tune.metric: {self.tune.metric!r} is not reported; choose one of {', '.join(reported)}")
        stopping = self.train.early_stopping
        if stopping is not None:
            if stopping.metric not in reported:
                raise ValueError(f"train.early_stopping.metric: {stopping.metric!r} is not reported; choose one of {', '.join(reported)}")
            if not self.has_validation or self.train.eval_steps is None:
                raise ValueError("train.early_stopping: needs a validation split (data.split.val, data.validation or data.kfold) and train.eval_steps")
        return self

    @property
    def metric_names(self) -> list[str]:
        """eval.metrics, or the defaults of data.format."""
        return list(self.eval.metrics if self.eval.metrics is not None else DEFAULT_METRICS[self.data.format])

    @property
    def eval_keys(self) -> list[str]:
        """Every metric an evaluation reports (eval_loss first)."""
        keys = ["eval_loss", *(key for name in self.metric_names for key in METRICS[name].keys)]
        return keys + list(GENERAL_KEYS) if self.eval.general is not None else keys

    @property
    def has_validation(self) -> bool:
        return bool(self.data.validation) or self.data.split.val > 0 or self.data.kfold is not None

    @model_validator(mode="after")
    def _sections_agree(self) -> ExperimentConfig:
        if self.data.packing and self.method.type in VIRTUAL_TOKEN_METHODS:
            raise ValueError(
                f"data.packing: cannot pack with method.type={self.method.type}: peft prepends virtual tokens and "
                "drops the restarting position_ids that keep packed examples apart; set data.packing=false"
            )
        if self.model.head == "sequence_classification":
            if self.data.format != "classification":
                raise ValueError(
                    f"model.head: sequence_classification needs data.format=classification, got {self.data.format!r}"
                )
            if self.data.packing:
                raise ValueError("data.packing: a classification head takes one example per row; set data.packing=false")
            if self.eval.general is not None:
                raise ValueError("eval.general: the forgetting monitor scores a causal LM's text loss; a classification head has none")
            if self.method.type == "prefix":
                raise ValueError(
                    "method.type: prefix tuning cannot train a classification head here (peft 0.21 looks for a "
                    "past_key_values argument that transformers 5 renamed); use prompt, lora, ia3, adapter or full"
                )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.storage_path).expanduser().resolve() / self.name


# ---------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and a YAML-parsed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each dotted override set (sections are created as needed)."""
    result = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"{where}: is a value, not a section; cannot set {'.'.join(path)}")
            node = child
        node[path[-1]] = value
    return result


def with_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`raw` with searched values set by dotted key (None: a conditional key that does not apply).
    A new `method.type` starts its method section afresh: the old method's keys (a LoRA rank,
    say) mean nothing to another method."""
    result = copy.deepcopy(raw)
    new_type = params.get("method.type")
    if new_type is not None and result.get("method", {}).get("type") != new_type:
        result["method"] = {"type": new_type}
    return apply_overrides(result, [f"{key}={json.dumps(value)}" for key, value in sorted(params.items()) if value is not None])


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        loc = problem["loc"]
        key = ".".join(str(part) for i, part in enumerate(loc) if not _is_union_tag(loc, i))
        message = problem["msg"].removeprefix("Value error, ")
        if not key:  # checks across sections name their keys themselves
            lines.append(message)
            continue
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        got = problem.get("input")
        suffix = "" if problem["type"] in {"extra_forbidden", "missing"} or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{key}: {message}{suffix}")
    return "\n".join(lines)


_METHOD_TAGS = {method.model_fields["type"].default for method in METHOD_CLASSES}


def _is_union_tag(loc: tuple[int | str, ...], index: int) -> bool:
    """pydantic puts the discriminator value (e.g. 'lora', 'word_dropout') into error locations; hide it.
    The place decides (a field may share a tag's name, e.g. data.template)."""
    before = loc[index - 1] if index else None
    return (before == "method" and loc[index] in _METHOD_TAGS) or (
        isinstance(before, int) and index >= 2 and loc[index - 2] == "augment" and loc[index] in AUGMENT_OPS
    )


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    merged = apply_overrides(raw, overrides or [])
    try:
        return ExperimentConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML experiment file, apply `key=value` overrides, validate.

    Relative data paths are resolved against the current directory, as a shell user expects.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return config_from_dict(raw, overrides)


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def total_warmup_steps(train: TrainConfig, total_steps: int) -> int:
    if train.warmup_steps is not None:
        return min(train.warmup_steps, total_steps)
    return math.ceil(train.warmup_ratio * total_steps)
