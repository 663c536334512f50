"""Read rows from JSONL / JSON files, remembering where each came from.

Every row carries its source file and line so that a bad row can be reported and quarantined
precisely; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from rayft.config import UserInputError


class DataError(UserInputError):
    """The data cannot be used as configured; the message names the file (and line)."""


@dataclass(frozen=True)
class SourceRow:
    source: str
    line: int
    record: dict[str, Any] | None
    error: str | None = None


@dataclass
class RowProblem:
    source: str
    line: int
    reason: str
    detail: str
    raw: str = field(default="")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "reason": self.reason, "detail": self.detail, "raw": self.raw}


SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
HF_DATASET_MARKERS = ("state.json", "dataset_info.json")


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and all((path / marker).is_file() for marker in HF_DATASET_MARKERS)


def expand_paths(spec: str | list[str], key: str) -> list[Path]:
    """Resolve a path, glob or list of them; a pattern matching nothing is an error naming `key`.

    A directory is accepted when it is a Hugging Face dataset saved with `save_to_disk`.
    """
    patterns = [spec] if isinstance(spec, str) else spec
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not matches:
            raise DataError(f"{key}: no file matches {pattern!r} (relative paths start at {Path.cwd()})")
        for match in matches:
            path = Path(match)
            if _is_hf_dataset(path):
                paths.append(path)
            elif path.is_dir():
                splits = sorted(p.name for p in path.iterdir() if _is_hf_dataset(p))
                hint = f"a dataset dict: name one split, e.g. {match}/{splits[0]}" if splits else f"name the files (e.g. {match}/*.jsonl)"
                raise DataError(f"{key}: {match!r} is a directory; {hint}")
            elif path.suffix not in SUPPORTED_SUFFIXES:
                raise DataError(f"{key}: {match!r} has an unsupported suffix; use one of {', '.join(SUPPORTED_SUFFIXES)}")
            else:
                paths.append(path)
    return paths


def read_rows(path: Path) -> Iterator[SourceRow]:
    """Yield one SourceRow per data line (JSONL, CSV), array element (JSON) or row (Parquet,
    saved Hugging Face dataset), numbered from 1 as a person would count them."""
    if path.is_dir():
        yield from _read_hf_dataset(path)
    elif path.suffix == ".json":
        yield from _read_json_array(path)
    elif path.suffix == ".csv":
        yield from _read_csv(path)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        yield from _read_jsonl(path)


def _decode_lines(path: Path) -> tuple[str, list[SourceRow]]:
    """The file as text; lines that are not UTF-8 are blanked (keeping line numbers) and reported."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    lines, errors = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            errors.append(SourceRow(str(path), number, None, f"not_utf8: {err.reason} at byte {err.start}"))
            lines.append("")
    return "\n".join(lines), errors


def _read_csv(path: Path) -> Iterator[SourceRow]:
    text, errors = _decode_lines(path)
    bad_lines = {row.line: row for row in errors}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []  # reads the header
    start = reader.line_num + 1
    for record in reader:
        line = start
        start = reader.line_num + 1
        while line in bad_lines:
            yield bad_lines.pop(line)
            line += 1
        if None in record or any(value is None for value in record.values()):
            yield SourceRow(str(path), line, None, f"wrong_field_count: expected {len(columns)} columns")
            continue
        yield SourceRow(str(path), line, dict(record))
    yield from bad_lines.values()


def _read_parquet(path: Path) -> Iterator[SourceRow]:
    number = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for record in batch.to_pylist():
            number += 1
            yield SourceRow(str(path), number, record)


def _read_hf_dataset(path: Path) -> Iterator[SourceRow]:
    import datasets

    dataset = datasets.load_from_disk(str(path))
    for number, record in enumerate(dataset, start=1):
        yield SourceRow(str(path), number, dict(record))


def _read_jsonl(path: Path) -> Iterator[SourceRow]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield SourceRow(str(path), number, None, f"not_utf8: {err.reason} at byte {err.start}")
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                yield SourceRow(str(path), number, None, f"malformed_json: {err.msg} at column {err.colno}")
                continue
            if not isinstance(record, dict):
                yield SourceRow(str(path), number, None, f"not_an_object: got {type(record).__name__}")
                continue
            yield SourceRow(str(path), number, record)


def _read_json_array(path: Path) -> Iterator[SourceRow]:
    try:
        items = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a valid JSON document ({err})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: a .json data file must hold an array of objects")
    for number, record in enumerate(items, start=1):
        if isinstance(record, dict):
            yield SourceRow(str(path), number, record)
        else:
            yield SourceRow(str(path), number, None, f"not_an_object: got {type(record).__name__}")
