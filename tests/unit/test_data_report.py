"""The data quality report (rayft/data/report.py) on small in-process data, and `rayft data
report` / `rayft data preview` on the quickstart. The tiny model's tokenizer is ByT5: one token
per UTF-8 byte, plus the trained EOS, so every token length below is counted by hand."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from rayft.cli import main
from rayft.config import config_from_dict
from rayft.data.facts import SplitFacts
from rayft.data.pipeline import DataCounts, _count_split, read_splits
from rayft.data.report import LENGTHS_PNG, REPORT_JSON, REPORT_MD, DataReport, build_report, render_markdown, write_report
from rayft.models.loading import configured_tokenizer
from tests.conftest import QUICKSTART_DATA, REPO, tiny_experiment, write_jsonl

NO_HOLDOUT = {"val": 0.0, "test": 0.0}


def _report(tmp_path: Path, rows: list[dict], **data) -> tuple[DataReport, dict[str, list[int]], DataCounts]:
    config = config_from_dict(tiny_experiment(tmp_path, data={"train": str(write_jsonl(tmp_path / "d.jsonl", rows)), **data}))
    tokenizer = configured_tokenizer(config.model)
    split_rows = read_splits(config, tmp_path / "run", tokenizer)
    report, lengths = build_report(config, split_rows.counts, split_rows.facts)
    return report, lengths, split_rows.counts


def _instruction(prompt: str, answer: str) -> dict[str, str]:
    """A row of 25 + len(prompt) + len(answer) tokens: 'Instruction: ' (13) + prompt + '\\nResponse:'
    (10), then ' ' + answer + EOS."""
    return {"instruction": prompt, "output": answer}


def test_duplicates_empty_fields_and_token_lengths(tmp_path: Path) -> None:
    """Pins exact vs normalised duplicates (case, punctuation, spacing folded), empty and
    whitespace-only optional fields, the quarantined empty required field, and the length summary."""
    rows = [
        {"instruction": "Say hi", "output": "hi"},  # 29 + 3 + EOS = 33 tokens; input missing
        {"instruction": "Say hi", "output": "hi"},  # exact duplicate of row 1
        {"instruction": "say HI!", "output": "hi"},  # normalised duplicate of row 1: 34 tokens
        {"instruction": "Add", "input": "   ", "output": "3"},  # whitespace input: the short template, 29 tokens
        {"instruction": "Add", "input": "", "output": "3"},  # the same text as row 4: an exact duplicate
        {"instruction": "Add", "input": "1 2", "output": "3"},  # 37 + 2 + EOS = 40 tokens
        {"instruction": "Add", "input": "1  2", "output": "3"},  # only the spacing differs from row 6: 41 tokens
        {"instruction": "Add", "output": "  "},  # an empty required field: quarantined
    ]
    report, lengths, counts = _report(tmp_path, rows, split=NO_HOLDOUT, max_bad_fraction=0.2)
    train = report.splits["train"]
    assert (report.read, report.kept, report.quarantined, report.filtered) == (8, 7, {"empty_field": 1}, {})
    assert counts.read == counts.kept + sum(counts.quarantined.values()) + sum(counts.filtered.values())
    assert train.rows == 7
    assert train.exact_duplicates == 2  # rows 2 and 5
    assert train.normalised_duplicates == 4  # rows 2, 3, 5 and 7
    assert train.empty_optional_fields == {"input": 5}
    assert lengths["train"] == [29, 29, 33, 33, 34, 40, 41]  # sorted
    assert train.token_lengths == {"min": 29, "mean": 34.1, "p50": 33.0, "p95": pytest.approx(40.7), "max": 41}
    assert report.splits["validation"].rows == report.splits["test"].rows == 0
    assert report.overlap_with_train == {}, "no held-out rows, nothing to leak"
    assert "| train | 7 | 2 | 4 | - | 0 | 29 / 33 / 41 / 41 | {'input': 5} |" in render_markdown(report)


def test_label_balance_per_split_for_classification(tmp_path: Path) -> None:
    """Pins label counts per split: a stratified split keeps floor(fraction x stratum) of each label held out."""
    rows = [{"text": f"good film {i}", "label": "pos"} for i in range(20)] + [{"text": f"bad film {i}", "label": "neg"} for i in range(10)]
    report, _, counts = _report(tmp_path, rows, format="classification", split={"val": 0.2, "test": 0.1, "stratify_by": "label"})
    assert {name: split.labels for name, split in report.splits.items()} == {
        "train": {"neg": 7, "pos": 14}, "validation": {"neg": 2, "pos": 4}, "test": {"neg": 1, "pos": 2},
    }
    assert counts.splits == {"train": 21, "validation": 6, "test": 3}
    assert "Label balance: train {'neg': 7, 'pos': 14}; validation {'neg': 2, 'pos': 4}; test {'neg': 1, 'pos': 2}" in render_markdown(report)


def test_train_validation_overlap_counts_leaked_rows(tmp_path: Path) -> None:
    """Pins leakage as validation rows whose normalised text is in train: an exact copy twice and a
    case/punctuation variant are 3 leaked rows (2 distinct texts); a new row is none."""
    train = write_jsonl(tmp_path / "train.jsonl", [_instruction("Say hi", "hi"), _instruction("Add 1 2", "3"), _instruction("Name a colour", "red")])
    validation = write_jsonl(
        tmp_path / "val.jsonl",
        [_instruction("Say hi", "hi"), _instruction("Say hi", "hi"), _instruction("add 1 2!", "3"), _instruction("Name a fruit", "fig")],
    )
    config = config_from_dict(tiny_experiment(tmp_path, data={"train": str(train), "validation": str(validation)}))
    tokenizer = configured_tokenizer(config.model)
    split_rows = read_splits(config, tmp_path / "run", tokenizer)
    report, _ = build_report(config, split_rows.counts, split_rows.facts)
    assert report.overlap_with_train == {"validation": 3}
    assert "Overlap with train (normalised text, leakage): validation 3" in render_markdown(report)


LENGTH_ROWS = [
    _instruction("a", "b"),  # 27 tokens
    _instruction("abcd", "b"),  # 30
    _instruction("x" * 10, "y"),  # 36
    _instruction("x" * 50, "y"),  # 76 > 64: truncate cuts 12 prompt tokens
    _instruction("q", "z" * 70),  # 96 > 64 and the answer alone is 72: dropped even when truncating
]


def test_length_limit_with_drop_counts_the_dropped_rows(tmp_path: Path) -> None:
    """Pins overlength drop: both long rows are filtered as overlength, none truncated."""
    report, lengths, counts = _report(tmp_path, LENGTH_ROWS, max_length=64, split=NO_HOLDOUT)
    assert counts.filtered == {"overlength": 2} and counts.truncated == {"train": 0, "validation": 0, "test": 0}
    assert (report.splits["train"].filtered, report.splits["train"].truncated, lengths["train"]) == ({"overlength": 2}, 0, [27, 30, 36])
    assert "Length limit (max_length 64, overlength drop): train 2 dropped, 0 truncated; validation 0 dropped, 0 truncated; test 0 dropped, 0 truncated" in render_markdown(report)


def test_length_limit_with_truncate_counts_drops_and_truncations_and_packing(tmp_path: Path) -> None:
    """Pins what the length limit did under truncate (1 row cut to 64 and counted, 1 still dropped)
    and what packing did: first-fit decreasing puts 64 | 36 + 27 | 30 into 3 sequences of 64."""
    report, lengths, counts = _report(tmp_path, LENGTH_ROWS, max_length=64, overlength="truncate", packing=True, split=NO_HOLDOUT)
    assert (counts.read, counts.kept, counts.filtered) == (5, 4, {"overlength": 1})
    assert counts.truncated == {"train": 1, "validation": 0, "test": 0}
    assert (report.splits["train"].filtered, report.splits["train"].truncated) == ({"overlength": 1}, 1)
    assert lengths["train"] == [27, 30, 36, 64]
    assert report.packing == {"examples": 4, "sequences": 3, "efficiency": round(157 / 192, 4)}
    markdown = render_markdown(report)
    assert "Rows read: 5 = kept 4 + quarantined 0 + filtered 1 {'overlength': 1}" in markdown
    assert "Length limit (max_length 64, overlength truncate): train 1 dropped, 1 truncated;" in markdown
    assert "Packing: 4 training examples into 3 sequences, efficiency 81.8%" in markdown


def test_weighted_mixing_shows_the_rows_left_out(tmp_path: Path) -> None:
    """Pins mixed_out in the report: 0.5/0.5 of 8 task and 20 replay rows keeps 8 + 8, leaves 12 out."""
    task = write_jsonl(tmp_path / "task.jsonl", [_instruction("task", str(i)) for i in range(8)])
    replay = write_jsonl(tmp_path / "replay.jsonl", [_instruction("replay", str(i)) for i in range(20)])
    config = config_from_dict(tiny_experiment(tmp_path, data={"train": [str(task), str(replay)], "weights": [0.5, 0.5], "split": NO_HOLDOUT}))
    tokenizer = configured_tokenizer(config.model)
    split_rows = read_splits(config, tmp_path / "run", tokenizer)
    report, _ = build_report(config, split_rows.counts, split_rows.facts)
    assert (report.read, report.kept, report.mixed_out, report.filtered) == (28, 16, 12, {"mixed_out": 12})
    markdown = render_markdown(report)
    assert "Rows read: 28 = kept 16 + quarantined 0 + filtered 12 {'mixed_out': 12}" in markdown
    assert "Mixing (data.weights): 12 training rows left out (mixed_out)" in markdown


def test_write_report_writes_json_markdown_and_a_real_png(tmp_path: Path) -> None:
    """Pins the report's files: the JSON holds the numbers, and token_lengths.png decodes as a 770 x 440 PNG (7 x 4 in at 110 dpi)."""
    config = config_from_dict(tiny_experiment(tmp_path, data={"train": str(write_jsonl(tmp_path / "d.jsonl", LENGTH_ROWS)), "max_length": 64}))
    tokenizer = configured_tokenizer(config.model)
    split_rows = read_splits(config, tmp_path / "run", tokenizer)
    out = tmp_path / "report"
    write_report(config, split_rows.counts, split_rows.facts, out)
    assert {p.name for p in out.iterdir()} == {REPORT_JSON, REPORT_MD, LENGTHS_PNG}
    png = out / LENGTHS_PNG
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[:2] == (440, 770)
    saved = json.loads((out / REPORT_JSON).read_text())
    assert (saved["read"], saved["kept"], saved["filtered"], saved["max_length"]) == (5, 3, {"overlength": 2}, 64)
    assert sum(split["rows"] for split in saved["splits"].values()) == 5
    assert (out / REPORT_MD).read_text().startswith("# Data report\n\nRows read: 5 = kept 3 + quarantined 0 + filtered 2 {'overlength': 2}\n")


def test_split_counts_take_input_rows_only() -> None:
    """Pins the counting both drivers share (_count_split, the Ray Data path's too): augmented copies
    (copy > 0) enter the split's size but never kept, filtered or truncated, which count input rows."""
    facts = SplitFacts()
    facts.add(pd.DataFrame({
        "copy": [0, 0, 0, 1, 1],
        "augmented": ["", "", "", "word_swap", "word_swap"],
        "drop_reason": ["", "overlength: 70 tokens > max_length 64", "", "", "overlength: 71 tokens > max_length 64"],
        "truncated": [True, False, False, True, False],
        "text_hash": [11, 12, 11, 13, 14], "norm_hash": [21, 22, 21, 23, 24], "label": ["", "", "", "", ""],
        "empty_roles": ["input", "", "input", "", ""], "length": [64, 0, 30, 64, 0],
    }))
    counts, filtered = DataCounts(read=3), Counter[str]()
    _count_split(counts, filtered, "train", facts)
    assert (counts.splits, counts.kept, counts.truncated, dict(filtered)) == ({"train": 3}, 2, {"train": 1}, {"overlength": 1})
    # What the report takes from the same batch: input rows only, except what packing sees.
    assert (facts.rows, facts.filtered_copies, facts.empty_roles) == (3, {"word_swap": 1}, {"input": 2})
    assert (list(facts.text_hashes), dict(facts.input_lengths), dict(facts.example_lengths)) == ([11, 12, 11], {64: 1, 30: 1}, {64: 2, 30: 1})


def _quickstart_lengths() -> list[int]:
    """Every quickstart row's token count, from its text: the instruction template's bytes + ' ' + output + EOS."""
    lengths = []
    for line in QUICKSTART_DATA.read_text().splitlines():
        row = json.loads(line)
        prompt = f"Instruction: {row['instruction']}\nInput: {row['input']}\nResponse:" if row.get("input") else f"Instruction: {row['instruction']}\nResponse:"
        lengths.append(len(prompt.encode()) + len(f" {row['output']}".encode()) + 1)
    return lengths


def test_data_report_and_preview_commands_on_the_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Pins `rayft data report` and `rayft data preview -n 2` on experiments/quickstart.yaml: the
    report's files land in --out (nothing in the repository), 2000 rows split 1700/200/100 and
    reconcile, and the preview shows the first two training rows with their trained part marked."""
    monkeypatch.chdir(REPO)  # the quickstart names its data relative to the repository
    out = tmp_path / "report"
    storage = f"run.storage_path={tmp_path / 'runs'}"
    assert main(["data", "report", "experiments/quickstart.yaml", storage, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {REPORT_JSON, REPORT_MD, LENGTHS_PNG, "quarantine.jsonl"}
    assert (out / "quarantine.jsonl").read_text() == ""
    assert not (tmp_path / "runs").exists(), "the report goes to --out only"
    saved = json.loads((out / REPORT_JSON).read_text())
    assert (saved["read"], saved["kept"], saved["quarantined"], saved["filtered"], saved["mixed_out"]) == (2000, 2000, {}, {}, 0)
    assert {name: split["rows"] for name, split in saved["splits"].items()} == {"train": 1700, "validation": 200, "test": 100}
    assert {name: split["truncated"] for name, split in saved["splits"].items()} == {"train": 0, "validation": 0, "test": 0}
    expected = _quickstart_lengths()
    assert (min(expected), max(expected)) == (62, 67)
    assert [(split["token_lengths"]["min"], split["token_lengths"]["max"]) for split in saved["splits"].values()] == [(62, 67)] * 3
    assert saved["overlap_with_train"] == {"validation": 0, "test": 0}
    assert printed == (out / REPORT_MD).read_text() + f"\nwritten to {out}\n"
    assert "Rows read: 2000 = kept 2000 + quarantined 0 + filtered 0\n" in printed
    assert "| train | 1700 | 0 | 0 | - | 0 | 62 / 65 / 67 / 67 | - |" in printed

    assert main(["data", "preview", "experiments/quickstart.yaml", storage, "-n", "2"]) == 0
    assert capsys.readouterr().out.split("\n\n") == [
        "--- experiments/data/quickstart.jsonl:1  65 tokens, 3 trained\nInstruction: What is the first letter?\nInput: aeihge\nResponse:[[ a</s>]]",
        "--- experiments/data/quickstart.jsonl:2  64 tokens, 3 trained\nInstruction: What is the first letter?\nInput: jdice\nResponse:[[ j</s>]]\n",
    ]
    assert not (tmp_path / "runs").exists(), "a preview writes nothing"
