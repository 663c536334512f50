"""The Ray Data pipeline (read and validate a file per task, split from keys, tokenize) agrees
row for row with the in-process reader, reads S3, and accounts for every row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayft.config import config_from_dict
from rayft.data.readers import DataError
from rayft.data.pipeline import QUARANTINE_FILE, SUMMARY_FILE, prepare_datasets, read_splits
from rayft.models.loading import resolve_base_model, tokenizer_source
from tests.conftest import ASSETS, QUICKSTART_DATA, put_s3, tiny_experiment, write_jsonl


def test_ray_pipeline_matches_the_in_process_reader_on_local_and_s3_data(s3, tmp_path: Path) -> None:
    lines = QUICKSTART_DATA.read_text().splitlines()
    remote = put_s3(s3, "prepare/part.jsonl", ("\n".join(lines[:300] + ['{"instruction": 1, "output": "x"}']) + "\n").encode())
    local = write_jsonl(tmp_path / "local.jsonl", [json.loads(line) for line in lines[300:600]] + ["{broken"])
    experiment = tiny_experiment(
        tmp_path,
        data={"train": [remote, str(local)], "max_length": 66, "split": {"val": 0.1, "test": 0.1, "seed": 3}},
    )
    config = config_from_dict(experiment)
    run_dir = tmp_path / "run"
    tokenizer_path = tokenizer_source(config.model, resolve_base_model(config.model, run_dir))

    prepared = prepare_datasets(config, tokenizer_path, run_dir)
    expected = read_splits(config, tmp_path / "in-process")

    counts = prepared.counts
    assert counts.read == 602 and counts.quarantined == {"wrong_type": 1, "malformed_json": 1}
    assert counts.read == counts.kept + sum(counts.quarantined.values()) + sum(counts.filtered.values())
    assert json.loads((run_dir / SUMMARY_FILE).read_text())["kept"] == counts.kept
    problems = [json.loads(line) for line in (run_dir / QUARANTINE_FILE).read_text().splitlines()]
    assert [(p["source"], p["line"]) for p in problems] == [(remote, 301), (str(local), 301)]

    for name, dataset in prepared.datasets.items():
        got = dataset.take_all()
        orders = [row["order"] for row in got]
        assert len(set(orders)) == len(orders) == counts.splits[name]
        expected_orders = {row["order"] for row in expected.by_split[name]}
        dropped = sum(prepared.facts.splits[name].filtered.values())
        assert set(orders) <= expected_orders and len(expected_orders) - len(orders) == dropped
    assert set(prepared.datasets) == {"train", "validation", "test"}
    assert counts.filtered.get("overlength", 0) > 0  # max_length 66 cuts some rows: counted, not lost


def test_overlength_error_names_the_first_long_row(tmp_path: Path) -> None:
    rows = [{"instruction": "short", "output": "ok"}] * 5 + [{"instruction": "long " * 40, "output": "x"}] * 2
    config = config_from_dict(tiny_experiment(
        tmp_path, data={"train": str(write_jsonl(tmp_path / "d.jsonl", rows)), "max_length": 60, "overlength": "error", "split": {"val": 0.0}},
    ))
    run_dir = tmp_path / "run"
    tokenizer_path = tokenizer_source(config.model, resolve_base_model(config.model, run_dir))
    with pytest.raises(DataError, match=rf"d\.jsonl:6: overlength: \d+ tokens > max_length 60 \(data.overlength is 'error'"):
        prepare_datasets(config, tokenizer_path, run_dir)


def test_augmented_training_rows_are_counted_and_only_in_train(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in QUICKSTART_DATA.read_text().splitlines()[:50]]
    config = config_from_dict(tiny_experiment(tmp_path, data={
        "train": str(write_jsonl(tmp_path / "d.jsonl", rows)), "max_length": 96, "split": {"val": 0.2, "test": 0.0},
        "augment": [{"op": "word_swap", "swaps": 1, "p": 1.0, "copies": 1, "fields": ["instruction"]}],
    }))
    run_dir = tmp_path / "run"
    prepared = prepare_datasets(config, tokenizer_source(config.model, resolve_base_model(config.model, run_dir)), run_dir)
    counts = prepared.counts
    assert counts.splits == {"train": 80, "validation": 10, "test": 0}  # 40 rows + one swapped copy each
    assert counts.augmented == {"word_swap": {"added": 40, "discarded": 0, "filtered": 0}}
    assert counts.read == counts.kept == 50  # augmented rows are counted apart from the input
    report = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert report["augmented"]["word_swap"]["added"] == 40
    train_orders = [row["order"] for row in prepared.datasets["train"].take_all()]
    assert len(set(train_orders)) == 80


def test_the_malformed_corpus_gives_the_same_quarantine_on_ray_as_in_process(tmp_path: Path) -> None:
    """The corpus of bad inputs (tests/assets/malformed) through the Ray pipeline: every bad row in
    quarantine.jsonl with its file, line, reason and message, exactly as the in-process reader
    reports them, and read = kept + quarantined + filtered."""
    files = sorted(str(p) for p in (ASSETS / "malformed").glob("*.jsonl") if p.name not in {"empty.jsonl", "all_bad.jsonl"})
    config = config_from_dict(tiny_experiment(
        tmp_path, data={"train": files, "max_bad_fraction": 0.5, "max_length": 96, "split": {"val": 0.0, "test": 0.0}},
    ))
    run_dir = tmp_path / "run"
    prepared = prepare_datasets(config, tokenizer_source(config.model, resolve_base_model(config.model, run_dir)), run_dir)
    in_process = read_splits(config, tmp_path / "in-process")

    def problems(directory: Path) -> list[tuple[str, int, str, str]]:
        rows = [json.loads(line) for line in (directory / QUARANTINE_FILE).read_text().splitlines()]
        return [(Path(r["source"]).name, r["line"], r["reason"], r["detail"]) for r in rows]

    on_ray = problems(run_dir)
    assert on_ray == problems(tmp_path / "in-process")
    assert [(name, line, reason) for name, line, reason, _ in on_ray] == [
        ("missing_fields.jsonl", 2, "missing_field"), ("missing_fields.jsonl", 9, "empty_field"),
        ("non_utf8.jsonl", 5, "not_utf8"),
        *[("schema_b.jsonl", line, "missing_field") for line in range(1, 6)],
        ("truncated_line.jsonl", 20, "malformed_json"),
        ("wrong_types.jsonl", 3, "wrong_type"), ("wrong_types.jsonl", 7, "wrong_type"),
    ]
    assert all(detail for *_, detail in on_ray), "every quarantined row says what is wrong"
    counts = prepared.counts
    assert counts.read == in_process.counts.read
    assert counts.read == counts.kept + sum(counts.quarantined.values()) + sum(counts.filtered.values())
    assert counts.filtered == in_process.counts.filtered and counts.filtered.get("overlength") == 1  # the huge row
