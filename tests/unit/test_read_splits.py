from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rayft.config import config_from_dict
from rayft.data.pipeline import QUARANTINE_FILE, read_splits
from rayft.data.readers import DataError
from tests.conftest import tiny_experiment, write_jsonl

GOOD = {"instruction": "Is it even?", "input": "2", "output": "even"}


def _config(tmp_path: Path, train: str | list[str], **data):
    return config_from_dict(tiny_experiment(tmp_path, data={"train": train, **data}))


def test_bad_rows_are_quarantined_with_file_line_and_reason(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [GOOD] * 40 + ['{"instruction": "x", "output": ', {"instruction": "x"}, "[1, 2]", {"instruction": "i", "output": 5}],
    )
    with path.open("ab") as handle:
        handle.write(b'{"instruction": "\xff\xfe", "output": "o"}\n')
    run_dir = tmp_path / "run"
    rows = read_splits(_config(tmp_path, str(path), max_bad_fraction=0.2), run_dir)
    quarantined = [json.loads(line) for line in (run_dir / QUARANTINE_FILE).read_text().splitlines()]
    assert [(q["line"], q["reason"]) for q in quarantined] == [
        (41, "malformed_json"), (42, "missing_field"), (43, "not_an_object"), (44, "wrong_type"), (45, "not_utf8"),
    ]
    assert all(q["source"] == str(path) for q in quarantined)
    counts = rows.counts
    assert counts.read == 45
    assert counts.quarantined == {"malformed_json": 1, "missing_field": 1, "not_an_object": 1, "wrong_type": 1, "not_utf8": 1}
    assert sum(len(r) for r in rows.by_split.values()) == 40
    assert counts.read == sum(len(r) for r in rows.by_split.values()) + sum(counts.quarantined.values())


def test_too_many_bad_rows_stop_the_run_naming_the_first(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, {"instruction": "x"}, {"instruction": "y"}])
    with pytest.raises(DataError, match=r"data\.train: 2 of 3 rows are bad .*bad\.jsonl:2 missing_field"):
        read_splits(_config(tmp_path, str(path)), tmp_path / "run")


def test_all_rows_bad(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", ["not json"])
    with pytest.raises(DataError, match=r"all 1 rows are bad \(first: .*bad\.jsonl:1 malformed_json"):
        read_splits(_config(tmp_path, str(path)), tmp_path / "run")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"data\.train: the files hold no rows"):
        read_splits(_config(tmp_path, str(tmp_path / "empty.jsonl")), tmp_path / "run")


def test_missing_file_names_the_key_and_pattern(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train: no file matches '.*nope\.jsonl'"):
        read_splits(_config(tmp_path, str(tmp_path / "nope.jsonl")), tmp_path / "run")


def test_bom_crlf_globs_and_json_arrays_are_read(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n" + json.dumps(GOOD).encode() + b"\r\n")
    (tmp_path / "b.json").write_text(json.dumps([GOOD, GOOD, GOOD]))
    rows = read_splits(_config(tmp_path, [str(tmp_path / "*.jsonl"), str(tmp_path / "b.json")]), tmp_path / "run")
    assert rows.counts.read == 5 and rows.counts.quarantined == {}
    assert sorted(r["line"] for split in rows.by_split.values() for r in split) == [1, 1, 2, 2, 3]


def test_explicit_validation_files_replace_the_carved_split(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [GOOD] * 10)
    val = write_jsonl(tmp_path / "val.jsonl", [GOOD] * 3)
    rows = read_splits(_config(tmp_path, str(train), validation=str(val)), tmp_path / "run")
    assert {k: len(v) for k, v in rows.by_split.items()} == {"train": 10, "validation": 3, "test": 0}
    orders = [r["order"] for r in rows.by_split["validation"]]
    assert orders == sorted(set(orders)) and [r["line"] for r in rows.by_split["validation"]] == [1, 2, 3]


def test_csv_rows_keep_their_line_numbers_and_bad_lines_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(
        b"instruction,input,output\r\n"
        b"Is it even?,2,even\r\n"
        b"Is it even?,\xff\xfe,odd\r\n"
        b'"Multi\nline",3,odd\r\n'
        b"Is it even?,4\r\n"
        b"Is it even?,6,even\r\n"
    )
    rows = read_splits(_config(tmp_path, str(path), max_bad_fraction=0.5), tmp_path / "run")
    quarantined = [json.loads(line) for line in (tmp_path / "run" / QUARANTINE_FILE).read_text().splitlines()]
    assert [(q["line"], q["reason"]) for q in quarantined] == [(3, "not_utf8"), (6, "wrong_field_count")]
    kept = sorted((r["line"], json.loads(r["record"])["input"]) for split in rows.by_split.values() for r in split)
    assert kept == [(2, "2"), (4, "3"), (7, "6")]
    assert rows.counts.read == 5


def test_parquet_and_saved_hugging_face_datasets_are_read(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([GOOD, {"instruction": "x"}, GOOD]), tmp_path / "a.parquet")
    datasets.Dataset.from_list([GOOD, GOOD]).save_to_disk(str(tmp_path / "hf"))
    rows = read_splits(_config(tmp_path, [str(tmp_path / "a.parquet"), str(tmp_path / "hf")], max_bad_fraction=0.5), tmp_path / "run")
    assert rows.counts.read == 5 and rows.counts.quarantined == {"missing_field": 1}
    sources = sorted((Path(r["source"]).name, r["line"]) for split in rows.by_split.values() for r in split)
    assert sources == [("a.parquet", 1), ("a.parquet", 3), ("hf", 1), ("hf", 2)]


def test_a_dataset_dict_directory_asks_for_a_split(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list([GOOD])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"is a directory; a dataset dict: name one split, e.g. .*dd/train"):
        read_splits(_config(tmp_path, str(tmp_path / "dd")), tmp_path / "run")


def test_weighted_mixing_keeps_the_proportions_without_repeating_rows(tmp_path: Path) -> None:
    task = write_jsonl(tmp_path / "task.jsonl", [{"instruction": "task", "output": str(i)} for i in range(100)])
    replay = write_jsonl(tmp_path / "replay.jsonl", [{"instruction": "replay", "output": str(i)} for i in range(1000)])
    config = _config(tmp_path, [str(task), str(replay)], weights=[0.8, 0.2], split={"val": 0.0, "test": 0.0})
    rows = read_splits(config, tmp_path / "run")
    kinds = Counter(json.loads(r["record"])["instruction"] for r in rows.by_split["train"])
    assert kinds == {"task": 100, "replay": 25}  # min(100 / 0.8, 1000 / 0.2) = 125 rows in all
    outputs = [json.loads(r["record"])["output"] for r in rows.by_split["train"] if "replay" in r["record"]]
    assert len(set(outputs)) == 25, "no replay row repeats"
    assert rows.counts.filtered == {"mixed_out": 975}
    assert rows.counts.read == 125 + 975


def test_weights_need_one_positive_weight_per_entry(tmp_path: Path) -> None:
    from rayft.config import ConfigError

    with pytest.raises(ConfigError, match=r"^data: weights: need 2 positive weights, one per data.train entry"):
        _config(tmp_path, ["a.jsonl", "b.jsonl"], weights=[1.0])


def test_counts_reconcile_with_tokenization_filters_and_mixing(tmp_path: Path) -> None:
    """Regression: read_splits set no kept count and missed rows filtered at tokenization, so
    `rayft data report`'s counts did not add up. Pins read = kept + quarantined + filtered with a
    quarantined row, rows left out by mixing and over-long rows, and the per-split sizes and truncations."""
    long = {"instruction": "x" * 80, "output": "y"}  # 25 + 80 + 1 = 106 tokens > max_length 96
    task = write_jsonl(tmp_path / "task.jsonl", [GOOD] * 6 + [long] * 2 + [{"instruction": "no output"}])
    replay = write_jsonl(tmp_path / "replay.jsonl", [{"instruction": "replay", "output": str(i)} for i in range(20)])
    config = _config(tmp_path, [str(task), str(replay)], weights=[0.5, 0.5], split={"val": 0.0, "test": 0.0})
    counts = read_splits(config, tmp_path / "run").counts
    assert (counts.read, counts.kept, counts.quarantined) == (29, 14, {"missing_field": 1})
    assert counts.filtered == {"mixed_out": 12, "overlength": 2}  # 8 task rows keep 8 of the 20 replay rows
    assert counts.read == counts.kept + sum(counts.quarantined.values()) + sum(counts.filtered.values())
    assert counts.splits == {"train": 14, "validation": 0, "test": 0}
    assert counts.truncated == {"train": 0, "validation": 0, "test": 0}


def test_truncated_rows_are_counted_per_split(tmp_path: Path) -> None:
    """Pins data.overlength truncate in the counts: long rows are kept, cut, and counted by split."""
    long = {"instruction": "x" * 80, "output": "y"}
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD] * 16 + [long] * 4)
    config = _config(tmp_path, str(path), overlength="truncate", split={"val": 0.0, "test": 0.0})
    rows = read_splits(config, tmp_path / "run")
    assert (rows.counts.kept, rows.counts.filtered, rows.counts.truncated) == (20, {}, {"train": 4, "validation": 0, "test": 0})
    assert [r["features"]["length"] for r in rows.by_split["train"] if r["features"]["truncated"]] == [96] * 4


def test_overlength_error_names_the_first_long_row_in_process(tmp_path: Path) -> None:
    """Pins that the in-process reader stops on data.overlength error as a run does, naming file and line."""
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD] * 3 + [{"instruction": "x" * 80, "output": "y"}])
    config = _config(tmp_path, str(path), overlength="error", split={"val": 0.0, "test": 0.0})
    with pytest.raises(DataError, match=r"d\.jsonl:4: overlength: 106 tokens > max_length 96 \(data\.overlength is 'error'"):
        read_splits(config, tmp_path / "run")
