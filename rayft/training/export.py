"""`rayft export`: turn a checkpoint into a Hugging Face model directory with a model card.

What comes out depends on the method that trained it:
  full                 the model as saved (config, weights), loadable with transformers alone
  LoRA / DoRA / IA3    --merge: the update merged into the base (peft merge_and_unload), loadable
                       with transformers alone; without --merge: the adapter alone, with the base
                       recorded in adapter_config.json (loads with peft)
  prefix / prompt      the adapter alone: virtual tokens are not a weight update, nothing merges
  adapter (bottleneck) the adapter files alone: its non-linear layers cannot fold into the base
                       weights, so --merge is refused; they load with rayft's `load_adapters`
Every export also holds the tokenizer and a README.md model card (base, method, data, metrics).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from peft import PeftConfig, PeftModel
from transformers import AutoTokenizer

from rayft.config import ExperimentConfig, UserInputError
from rayft.data.classification import LABELS_FILE
from rayft.models.loading import load_causal_lm, load_sequence_classifier
from rayft.models.methods.adapter import SPEC_FILE
from rayft.tracking.summary import SHOWN
from rayft.training.checkpoint import MODEL_DIR, IncompleteCheckpointError, read_marker

PEFT_CONFIG = "adapter_config.json"
CARD_FILE = "README.md"
RUN_CONFIG, RUN_RESULT = "config.yaml", "result.json"  # written by rayft.training.launch into the run directory

Kind = Literal["full", "merged", "peft-adapter", "bottleneck-adapter"]


class ExportError(UserInputError):
    """The checkpoint cannot be exported as asked."""


@dataclass(frozen=True)
class Exported:
    out: Path
    kind: Kind
    load_snippet: str


@dataclass(frozen=True)
class _Run:
    """What the run directory around a checkpoint tells the model card (all optional)."""

    config: ExperimentConfig | None
    result: dict[str, Any]
    labels: list[str] | None


def export_checkpoint(checkpoint: str | Path, out: str | Path, merge: bool = False) -> Exported:
    checkpoint, out = Path(checkpoint), Path(out)
    try:
        marker = read_marker(checkpoint)
    except IncompleteCheckpointError as err:
        raise ExportError(f"CHECKPOINT: {err}") from None
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"OUT: {out} is not empty; choose a new directory")
    model_dir = checkpoint / MODEL_DIR
    run = _read_run(checkpoint.parent)
    if (model_dir / PEFT_CONFIG).is_file():
        peft_config = PeftConfig.from_pretrained(str(model_dir))
        base = peft_config.base_model_name_or_path or ""
        if merge:
            if peft_config.is_prompt_learning:
                raise ExportError(
                    f"--merge: {peft_config.peft_type.value.lower()} adds virtual tokens, not a weight update; nothing "
                    "merges into the base. Export without --merge (the adapter loads with peft)"
                )
            _merge_peft(model_dir, base, run.labels, out)
            kind: Kind = "merged"
        else:
            shutil.copytree(model_dir, out, dirs_exist_ok=True)
            kind = "peft-adapter"
    elif (model_dir / SPEC_FILE).is_file():
        if merge:
            raise ExportError(
                "--merge: bottleneck adapters are non-linear layers added to the model and cannot be folded into its "
                "weights; export without --merge (they load with rayft.models.methods.adapter.load_adapters)"
            )
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
        base = json.loads((model_dir / SPEC_FILE).read_text())["base_model_name_or_path"]
        kind = "bottleneck-adapter"
    else:
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
        base = _base_name(run.config)
        kind = "full"
    snippet = _load_snippet(kind, out, base, run.labels)
    (out / CARD_FILE).write_text(model_card(kind, base, run, marker, snippet))
    return Exported(out, kind, snippet)


def _merge_peft(model_dir: Path, base: str, labels: list[str] | None, out: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    base_model = load_sequence_classifier(base, labels, tokenizer.pad_token_id) if labels else load_causal_lm(base)
    merged = PeftModel.from_pretrained(base_model, str(model_dir)).merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _read_run(run_dir: Path) -> _Run:
    config = None
    if (run_dir / RUN_CONFIG).is_file():
        config = ExperimentConfig.model_validate(yaml.safe_load((run_dir / RUN_CONFIG).read_text()))
    result = json.loads((run_dir / RUN_RESULT).read_text()) if (run_dir / RUN_RESULT).is_file() else {}
    labels = json.loads((run_dir / LABELS_FILE).read_text()) if (run_dir / LABELS_FILE).is_file() else None
    return _Run(config, result, labels)


def _base_name(config: ExperimentConfig | None) -> str:
    if config is None:
        return "unknown"
    if config.model.tiny is not None:
        return f"tiny {config.model.tiny.arch} built by rayft ({config.model.tiny.layers} layers, width {config.model.tiny.hidden})"
    return config.model.name_or_path or "unknown"


def _load_snippet(kind: Kind, out: Path, base: str, labels: list[str] | None) -> str:
    """Python that loads the export; a classifier's base needs its labels to build the head that the adapter fills."""
    auto = "AutoModelForSequenceClassification" if labels is not None else "AutoModelForCausalLM"
    if kind in ("full", "merged"):
        return f'from transformers import {auto}\nmodel = {auto}.from_pretrained("{out}")'
    head = f", num_labels={len(labels)}, id2label={dict(enumerate(labels))!r}" if labels is not None else ""
    base_line = f'base = {auto}.from_pretrained("{base}"{head})'
    if kind == "peft-adapter":
        return f'from peft import PeftModel\nfrom transformers import {auto}\n{base_line}\nmodel = PeftModel.from_pretrained(base, "{out}")'
    return (
        f"from transformers import {auto}\nfrom rayft.models.methods.adapter import load_adapters\n"
        f'{base_line}\nmodel = load_adapters(base, "{out}")'
    )


def _metric_rows(run: _Run, marker: dict[str, Any]) -> list[str]:
    columns = {
        "before": run.result.get("before", {}),
        "best": run.result.get("best_metrics", {}),
        "final": run.result.get("metrics", {}),
        "this checkpoint": marker.get("metrics", {}),
    }
    names = [name for name in (*SHOWN, "majority_accuracy") if any(isinstance(c.get(name), (int, float)) for c in columns.values())]
    if not names:
        return ["No evaluation metrics were recorded (the run had no validation split)."]

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else "-"

    rows = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows += [f"| {name} | " + " | ".join(cell(c.get(name)) for c in columns.values()) + " |" for name in names]
    return rows


def model_card(kind: Kind, base: str, run: _Run, marker: dict[str, Any], snippet: str) -> str:
    """README.md: where the model comes from, how it was trained, how well it does, how to load it."""
    config = run.config
    method = config.method.model_dump(exclude_none=True) if config else {"type": "unknown"}
    method_text = method.pop("type") + (f" ({', '.join(f'{k}={v}' for k, v in method.items())})" if method else "")
    library = "transformers" if kind in ("full", "merged") else "peft" if kind == "peft-adapter" else "rayft"
    lines = [
        "---",
        f"library_name: {library}",
        f"tags: [rayft, {config.method.type if config else 'unknown'}]",
        "---",
        f"# {config.name if config else 'rayft export'}",
        "",
        f"Fine-tuned with rayft from `{base}`; exported as **{kind}**"
        + (" (the update merged into the base weights)." if kind == "merged" else "."),
        "",
        "## Training",
        "",
        f"- base model: `{base}`",
        f"- method: {method_text}",
    ]
    if run.result.get("trainable_params") is not None:
        lines.append(f"- trainable parameters: {run.result['trainable_params']:,} of {run.result['total_params']:,}")
    if config is not None:
        train_files = config.data.train if isinstance(config.data.train, list) else [config.data.train]
        lines.append(f"- data: {', '.join(f'`{f}`' for f in train_files)} (format {config.data.format})")
        if run.result.get("data", {}).get("splits"):
            lines.append(f"- examples per split: {run.result['data']['splits']}")
        lines.append(f"- training: lr {config.train.lr}, batch {config.train.batch_size} per worker x {config.scaling.num_workers} workers")
    if run.labels is not None:
        lines.append(f"- labels (id order): {run.labels}")
    lines += [f"- checkpoint: step {marker.get('step')}", "", "## Metrics (validation)", "", *_metric_rows(run, marker)]
    lines += ["", "## Load", "", "```python", snippet, "```", ""]
    return "\n".join(lines)
