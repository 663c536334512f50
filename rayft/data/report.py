"""The data quality report: what the data holds and what the pipeline will do to it.

Written as data_report.json, data_report.md and token_lengths.png (a histogram) into the run
directory at the start of each run, and by `rayft data report`.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from transformers import PreTrainedTokenizerBase  # noqa: E402

from rayft.config import ExperimentConfig  # noqa: E402
from rayft.data.formats import format_record  # noqa: E402
from rayft.data.packing import packing_stats  # noqa: E402
from rayft.data.pipeline import SplitRows, read_splits  # noqa: E402
from rayft.data.tokenize import Dropped, tokenize_formatted  # noqa: E402

REPORT_JSON, REPORT_MD, LENGTHS_PNG = "data_report.json", "data_report.md", "token_lengths.png"
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalise(text: str) -> str:
    """Case, punctuation and spacing folded: near-identical rows collide."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


@dataclass
class SplitReport:
    rows: int = 0
    exact_duplicates: int = 0
    normalised_duplicates: int = 0
    empty_optional_fields: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    token_lengths: dict[str, float] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class DataReport:
    read: int
    quarantined: dict[str, int]
    max_length: int
    splits: dict[str, SplitReport]
    overlap_with_train: dict[str, int]
    """Rows of validation/test whose normalised text also appears in train (leakage)."""
    packing: dict[str, float] | None = None
    """With data.packing: training examples, packed sequences and efficiency (real tokens / slots)."""
    augmentation: dict[str, dict[str, int]] | None = None
    """With data.augment: rows added and discarded per op (rayft.data.augment.augmentation_counts)."""


def _length_summary(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    values = np.array(lengths)
    return {
        "min": int(values.min()), "mean": round(float(values.mean()), 1), "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)), "max": int(values.max()),
    }


def build_report(
    config: ExperimentConfig, split_rows: SplitRows, tokenizer: PreTrainedTokenizerBase
) -> tuple[DataReport, dict[str, list[int]]]:
    """The report, and every kept example's token length per split (for the histogram)."""
    data = config.data
    optional = [role for role, required in data.task.roles.items() if not required]
    splits: dict[str, SplitReport] = {}
    lengths: dict[str, list[int]] = {}
    keys: dict[str, set[str]] = {}
    for name, rows in split_rows.by_split.items():
        report = SplitReport(rows=len(rows))
        exact: Counter[str] = Counter()
        normalised: Counter[str] = Counter()
        lengths[name] = []
        for row in rows:
            record = json.loads(row["record"])
            for role in optional:
                value = record.get(data.column(role))
                if value is None or (isinstance(value, str) and not value.strip()):
                    report.empty_optional_fields[role] = report.empty_optional_fields.get(role, 0) + 1
            example = format_record(record, data, tokenizer)
            text = "".join(segment for segment, _ in example.segments)
            exact[text] += 1
            normalised[normalise(text)] += 1
            if example.label is not None:
                report.labels[example.label] = report.labels.get(example.label, 0) + 1
            tokens = tokenize_formatted(example, tokenizer, data)
            if isinstance(tokens, Dropped):
                report.filtered[tokens.reason] = report.filtered.get(tokens.reason, 0) + 1
            else:
                lengths[name].append(len(tokens.input_ids))
        report.exact_duplicates = sum(count - 1 for count in exact.values())
        report.normalised_duplicates = sum(count - 1 for count in normalised.values())
        report.token_lengths = _length_summary(lengths[name])
        keys[name] = set(normalised)
        splits[name] = report
    overlap = {name: len(keys[name] & keys["train"]) for name in keys if name != "train" and keys[name]}
    counts = split_rows.counts
    report = DataReport(counts.read, dict(counts.quarantined), data.max_length, splits, overlap)
    if data.packing and lengths.get("train"):
        stats = packing_stats(lengths["train"], data.max_length)
        report.packing = {"examples": stats.examples, "sequences": stats.sequences, "efficiency": round(stats.efficiency, 4)}
    return report, lengths


def plot_lengths(lengths: dict[str, list[int]], max_length: int, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, values in lengths.items():
        if values:
            axis.hist(values, bins=40, alpha=0.6, label=f"{name} ({len(values)})")
    axis.axvline(max_length, color="black", linestyle="--", label=f"max_length {max_length}")
    axis.set_xlabel("tokens per example")
    axis.set_ylabel("examples")
    axis.set_title("token lengths")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def render_markdown(report: DataReport) -> str:
    lines = [
        "# Data report", "",
        f"Rows read: {report.read}; quarantined: {sum(report.quarantined.values())} {report.quarantined or ''}".rstrip(), "",
        "| split | rows | exact dup. | normalised dup. | filtered | tokens min / p50 / p95 / max | empty optional |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for name, split in report.splits.items():
        t = split.token_lengths
        span = f"{t['min']} / {t['p50']:.0f} / {t['p95']:.0f} / {t['max']}" if t else "-"
        lines.append(
            f"| {name} | {split.rows} | {split.exact_duplicates} | {split.normalised_duplicates} | "
            f"{split.filtered or '-'} | {span} | {split.empty_optional_fields or '-'} |"
        )
    labelled = {name: split.labels for name, split in report.splits.items() if split.labels}
    if labelled:
        lines += ["", "Label balance: " + "; ".join(f"{name} {labels}" for name, labels in labelled.items())]
    if report.overlap_with_train:
        lines += ["", "Overlap with train (normalised text, leakage): " + ", ".join(f"{k} {v}" for k, v in report.overlap_with_train.items())]
    if report.packing:
        p = report.packing
        lines += ["", f"Packing: {p['examples']:.0f} training examples into {p['sequences']:.0f} sequences, efficiency {p['efficiency']:.1%}"]
    if report.augmentation:
        lines += ["", "## Augmentation (training split)", "", "| op | rows added | copies discarded (unchanged) |", "|---|---:|---:|"]
        lines += [f"| {op} | {c['added']} | {c['discarded']} |" for op, c in report.augmentation.items()]
    return "\n".join(lines) + "\n"


def write_report(config: ExperimentConfig, split_rows: SplitRows, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> DataReport:
    report, lengths = build_report(config, split_rows, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_JSON).write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out_dir / REPORT_MD).write_text(render_markdown(report))
    plot_lengths(lengths, config.data.max_length, out_dir / LENGTHS_PNG)
    return report



def report_for(config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> str:
    """`rayft data report`: read and split as a run would, write the report into out_dir, return its markdown."""
    return render_markdown(write_report(config, read_splits(config, out_dir), tokenizer, out_dir))
