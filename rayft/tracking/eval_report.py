"""The files an evaluation leaves in the run directory: eval_<split>.json, eval_<split>.md and,
for classification, eval_<split>_confusion.png (rows: reference label, columns: prediction)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


@dataclass
class EvalReport:
    split: str
    model: str
    """'base' or the checkpoint directory that was evaluated."""
    examples: int
    metrics: dict[str, float]
    confusion: dict[str, Any] | None = None
    """{labels: [...], matrix: [[...]]} for classification."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """The first answered examples: prediction and references, to read what the model says."""
    files: dict[str, str] = field(default_factory=dict)


def report_stem(split: str, base: bool) -> str:
    return f"eval_{split}_base" if base else f"eval_{split}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def render_markdown(report: EvalReport) -> str:
    lines = [f"# Evaluation on the {report.split} split", "", f"model: `{report.model}`  ", f"examples: {report.examples}", ""]
    lines += ["| metric | value |", "|---|---|"] + [f"| {name} | {_fmt(value)} |" for name, value in report.metrics.items()]
    if report.confusion is not None:
        labels, matrix = report.confusion["labels"], report.confusion["matrix"]
        lines += ["", "## Confusion matrix (rows: reference, columns: prediction)", ""]
        lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines += [f"| **{label}** | " + " | ".join(str(c) for c in row) + " |" for label, row in zip(labels, matrix)]
    if report.samples:
        lines += ["", "## Samples", "", "| prediction | references |", "|---|---|"]
        lines += [f"| {_cell(s['prediction'])} | {_cell(' / '.join(s['references']))} |" for s in report.samples]
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") or "(empty)"


def plot_confusion(labels: list[str], matrix: list[list[int]], path: Path, title: str) -> Path:
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=labels).plot(ax=axis, colorbar=False, xticks_rotation=45)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_eval_report(report: EvalReport, run_dir: Path, base: bool) -> EvalReport:
    """Write the JSON, the markdown and (classification) the confusion-matrix image; record their paths."""
    stem = report_stem(report.split, base)
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": run_dir / f"{stem}.json", "markdown": run_dir / f"{stem}.md"}
    if report.confusion is not None:
        files["confusion"] = plot_confusion(
            report.confusion["labels"], report.confusion["matrix"], run_dir / f"{stem}_confusion.png", f"{report.split}: confusion matrix"
        )
    report.files = {kind: str(path) for kind, path in files.items()}
    files["markdown"].write_text(render_markdown(report))
    files["json"].write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    return report
