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
from tests.conftest import QUICKSTART_DATA, S3_BUCKET, put_s3, tiny_experiment, write_jsonl


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
        dropped = set(prepared.stats.query("split == @name and drop_reason != ''").index)
        assert set(orders) <= expected_orders and len(expected_orders) - len(orders) == len(dropped)
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
