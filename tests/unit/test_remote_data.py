"""Data on S3 (a real S3 API: moto's server on loopback) reads like local data: globs, every
file type, file and line in quarantine, errors naming the key."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayft.config import config_from_dict
from rayft.data.pipeline import QUARANTINE_FILE, read_splits
from rayft.data.readers import DataError, expand_paths
from tests.conftest import S3_BUCKET, put_s3, tiny_experiment

GOOD = {"instruction": "say hi", "output": "hi"}


def _jsonl(rows: list[object]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def test_s3_glob_reads_every_file_type_and_quarantines_with_the_uri(s3, tmp_path: Path) -> None:
    put_s3(s3, "glob/a.jsonl", _jsonl([GOOD, '{"instruction": "cut', GOOD]))
    table = pa.table({"instruction": ["p1", "p2"], "output": ["o1", "o2"]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    put_s3(s3, "glob/nested/b.parquet", sink.getvalue())
    put_s3(s3, "glob/c.csv", b"instruction,output\nx,y\n")
    put_s3(s3, "other/ignored.jsonl", _jsonl([GOOD]))

    assert expand_paths(f"s3://{S3_BUCKET}/glob/**", "data.train") == [
        f"s3://{S3_BUCKET}/glob/a.jsonl", f"s3://{S3_BUCKET}/glob/c.csv", f"s3://{S3_BUCKET}/glob/nested/b.parquet",
    ]
    config = config_from_dict(tiny_experiment(tmp_path, data={"train": f"s3://{S3_BUCKET}/glob/**", "max_bad_fraction": 0.5, "split": {"val": 0.0}}))
    rows = read_splits(config, tmp_path / "run")
    assert rows.counts.read == 6 and rows.counts.quarantined == {"malformed_json": 1}
    kept = sorted((r["source"].rsplit("/", 1)[1], r["line"]) for r in rows.by_split["train"])
    assert kept == [("a.jsonl", 1), ("a.jsonl", 3), ("b.parquet", 1), ("b.parquet", 2), ("c.csv", 2)]
    [problem] = [json.loads(line) for line in (tmp_path / "run" / QUARANTINE_FILE).read_text().splitlines()]
    assert (problem["source"], problem["line"], problem["reason"]) == (f"s3://{S3_BUCKET}/glob/a.jsonl", 2, "malformed_json")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (f"s3://{S3_BUCKET}/missing/x.jsonl", "does not exist"),
        (f"s3://{S3_BUCKET}/missing/*.jsonl", "no file matches"),
        (f"s3://{S3_BUCKET}/dir", "is a directory"),
        (f"s3://{S3_BUCKET}/dir/x.txt", "unsupported suffix"),
    ],
)
def test_s3_paths_that_cannot_be_read_name_the_key(s3, uri: str, message: str) -> None:
    put_s3(s3, "dir/x.txt", b"text")
    with pytest.raises(DataError, match=f"data.validation: .*{message}"):
        expand_paths(uri, "data.validation")
