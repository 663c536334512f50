"""The malformed-input corpus (tests/assets/malformed): each case gives a clear message naming
file and line, bad rows land in quarantine.jsonl, and the counts reconcile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayft.config import config_from_dict
from rayft.data.pipeline import QUARANTINE_FILE, read_splits
from rayft.data.readers import DataError
from rayft.data.report import build_report
from tests.conftest import ASSETS, tiny_experiment

CORPUS = ASSETS / "malformed"


def _read(tmp_path: Path, *names: str, **data):
    config = config_from_dict(tiny_experiment(tmp_path, data={"train": [str(CORPUS / n) for n in names], "max_bad_fraction": 0.3, **data}))
    rows = read_splits(config, tmp_path / "run")
    quarantined = [json.loads(line) for line in (tmp_path / "run" / QUARANTINE_FILE).read_text().splitlines()]
    kept = sum(len(split) for split in rows.by_split.values())
    assert rows.counts.read == kept + len(quarantined), "read = kept + quarantined"
    return config, rows, [(Path(q["source"]).name, q["line"], q["reason"]) for q in quarantined]


@pytest.mark.parametrize(
    ("name", "read", "expected"),
    [
        ("truncated_line.jsonl", 40, [("truncated_line.jsonl", 20, "malformed_json")]),
        ("bom_crlf.jsonl", 10, []),
        ("non_utf8.jsonl", 30, [("non_utf8.jsonl", 5, "not_utf8")]),
        ("wrong_types.jsonl", 40, [("wrong_types.jsonl", 3, "wrong_type"), ("wrong_types.jsonl", 7, "wrong_type")]),
        ("missing_fields.jsonl", 40, [("missing_fields.jsonl", 2, "missing_field"), ("missing_fields.jsonl", 9, "empty_field")]),
    ],
)
def test_bad_rows_are_quarantined_by_file_and_line(tmp_path: Path, name: str, read: int, expected: list) -> None:
    _, rows, quarantined = _read(tmp_path, name)
    assert rows.counts.read == read
    assert quarantined == expected


def test_mixed_schemas_across_files_quarantine_the_other_schema(tmp_path: Path) -> None:
    _, rows, quarantined = _read(tmp_path, "schema_a.jsonl", "schema_b.jsonl", max_bad_fraction=0.25)
    assert rows.counts.read == 25
    assert quarantined == [("schema_b.jsonl", line, "missing_field") for line in range(1, 6)]


def test_empty_file_and_all_bad_rows_stop_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train: the files hold no rows"):
        _read(tmp_path, "empty.jsonl")
    with pytest.raises(DataError, match=r"data\.train: all 3 rows are bad \(first: .*all_bad\.jsonl:1 malformed_json"):
        _read(tmp_path, "all_bad.jsonl")


def test_a_huge_row_is_filtered_as_overlength_and_counted(tmp_path: Path) -> None:
    config, rows, quarantined = _read(tmp_path, "huge_row.jsonl", split={"val": 0.0, "test": 0.0})
    assert quarantined == []
    report, lengths = build_report(config, rows.counts, rows.facts)
    assert report.splits["train"].filtered == {"overlength": 1}
    assert len(lengths["train"]) == 19
