"""The data quality report: what the data holds and what the pipeline will do to it.

Written as data_report.json, data_report.md and token_lengths.png (a histogram) into the run
directory at the start of each run, and by `rayft data report`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from transformers import PreTrainedTokenizerBase  # noqa: E402

from rayft.config import ExperimentConfig  # noqa: E402
from rayft.data.facts import DataFacts, SplitFacts, expanded  # noqa: E402
from rayft.data.packing import packing_stats  # noqa: E402
from rayft.data.pipeline import MIXED_OUT, SPLITS, DataCounts, read_splits  # noqa: E402
from rayft.data.split import TRAIN  # noqa: E402

REPORT_JSON, REPORT_MD, LENGTHS_PNG = "data_report.json", "data_report.md", "token_lengths.png"


@dataclass
class SplitReport:
    rows: int = 0
    exact_duplicates: int = 0
    normalised_duplicates: int = 0
    empty_optional_fields: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    """Rows cut to max_length (data.overlength truncate); they train, but not whole."""
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
    kept: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    """Every filter reason with its rows (tokenization's and mixed_out): read = kept + quarantined + filtered."""
    mixed_out: int = 0
    """Training rows left out by data.weights mixing (also in `filtered`)."""
    overlength: str = "drop"
    """data.overlength: what the length limit does to longer rows."""
    packing: dict[str, float] | None = None
    """With data.packing: training examples, packed sequences and efficiency (real tokens / slots)."""
    augmentation: dict[str, dict[str, int]] | None = None
    """With data.augment: per op, training rows added, copies discarded (unchanged from their
    source) and added rows filtered at tokenization (e.g. too long)."""


def _length_summary(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    values = np.array(lengths)
    return {
        "min": int(values.min()), "mean": round(float(values.mean()), 1), "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)), "max": int(values.max()),
    }


def build_report(config: ExperimentConfig, counts: DataCounts, facts: DataFacts) -> tuple[DataReport, dict[str, list[int]]]:
    """The report from each split's facts, and every kept input row's token length per split
    (sorted, for the histogram). Quality numbers cover the input rows; augmented rows are counted
    apart and enter only what training sees (packing)."""
    data = config.data
    splits: dict[str, SplitReport] = {}
    lengths: dict[str, list[int]] = {}
    fingerprints = facts.fingerprints
    for name in SPLITS:
        split = facts.splits.get(name) or SplitFacts()
        lengths[name] = expanded(split.input_lengths)
        splits[name] = SplitReport(
            rows=split.rows,
            exact_duplicates=fingerprints.exact_duplicates.get(name, 0),
            normalised_duplicates=fingerprints.normalised_duplicates.get(name, 0),
            empty_optional_fields=dict(sorted(split.empty_roles.items())),
            filtered=dict(sorted(split.filtered.items())),
            truncated=split.truncated,
            token_lengths=_length_summary(lengths[name]),
            labels=dict(sorted(split.labels.items())),
        )
    report = DataReport(
        counts.read, dict(counts.quarantined), data.max_length, splits, dict(fingerprints.overlap_with_train), kept=counts.kept, filtered=dict(counts.filtered),
        mixed_out=counts.filtered.get(MIXED_OUT, 0), overlength=data.overlength, augmentation=dict(counts.augmented) or None,
    )
    trained = facts.splits[TRAIN].example_lengths if TRAIN in facts.splits else None
    if data.packing and trained:
        packed = packing_stats(expanded(trained), data.max_length)
        report.packing = {"examples": packed.examples, "sequences": packed.sequences, "efficiency": round(packed.efficiency, 4)}
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
    quarantined, filtered = sum(report.quarantined.values()), sum(report.filtered.values())
    lines = [
        "# Data report", "",
        f"Rows read: {report.read} = kept {report.kept} + quarantined {quarantined} {report.quarantined or ''}".rstrip()
        + f" + filtered {filtered} {report.filtered or ''}".rstrip(), "",
        "| split | rows | exact dup. | normalised dup. | filtered | truncated | tokens min / p50 / p95 / max | empty optional |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for name, split in report.splits.items():
        t = split.token_lengths
        span = f"{t['min']} / {t['p50']:.0f} / {t['p95']:.0f} / {t['max']}" if t else "-"
        lines.append(
            f"| {name} | {split.rows} | {split.exact_duplicates} | {split.normalised_duplicates} | "
            f"{split.filtered or '-'} | {split.truncated} | {span} | {split.empty_optional_fields or '-'} |"
        )
    if report.splits:
        limit = "; ".join(
            f"{name} {split.filtered.get('overlength', 0)} dropped, {split.truncated} truncated" for name, split in report.splits.items()
        )
        lines += ["", f"Length limit (max_length {report.max_length}, overlength {report.overlength}): {limit}"]
    if report.mixed_out:
        lines += ["", f"Mixing (data.weights): {report.mixed_out} training rows left out (mixed_out)"]
    labelled = {name: split.labels for name, split in report.splits.items() if split.labels}
    if labelled:
        lines += ["", "Label balance: " + "; ".join(f"{name} {labels}" for name, labels in labelled.items())]
    if report.overlap_with_train:
        lines += ["", "Overlap with train (normalised text, leakage): " + ", ".join(f"{k} {v}" for k, v in report.overlap_with_train.items())]
    if report.packing:
        p = report.packing
        lines += ["", f"Packing: {p['examples']:.0f} training examples into {p['sequences']:.0f} sequences, efficiency {p['efficiency']:.1%}"]
    if report.augmentation:
        lines += ["", "## Augmentation (training split)", "", "| op | rows added | copies discarded (unchanged) | filtered (cannot train) |", "|---|---:|---:|---:|"]
        lines += [f"| {op} | {c['added']} | {c['discarded']} | {c.get('filtered', 0)} |" for op, c in report.augmentation.items()]
    return "\n".join(lines) + "\n"


def write_report(config: ExperimentConfig, counts: DataCounts, facts: DataFacts, out_dir: Path) -> DataReport:
    report, lengths = build_report(config, counts, facts)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_JSON).write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out_dir / REPORT_MD).write_text(render_markdown(report))
    plot_lengths(lengths, config.data.max_length, out_dir / LENGTHS_PNG)
    return report


def report_for(config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> str:
    """`rayft data report`: read and split as a run would (in-process), write the report into out_dir, return its markdown."""
    split_rows = read_splits(config, out_dir, tokenizer)
    return render_markdown(write_report(config, split_rows.counts, split_rows.facts, out_dir))
