"""Read rows from JSONL / JSON / CSV / Parquet files and saved Hugging Face datasets, local or
remote (s3:// and the other URIs pyarrow's filesystems understand), remembering where each came from.

Every row carries its source file and line so that a bad row can be reported and quarantined
precisely; nothing is dropped silently. Each reader is a generator over one file, so a Ray Data
task can stream a file without holding it.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs
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


GLOB_CHARS = "*?["


def is_remote(path: str) -> bool:
    return "://" in path


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a URI; endpoint and credentials come from the environment
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never from the experiment file."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{uri}: cannot open its filesystem ({err})") from None


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and all((path / marker).is_file() for marker in HF_DATASET_MARKERS)


def expand_paths(spec: str | list[str], key: str) -> list[str]:
    """Resolve a path, glob or list of them (local or remote URIs); a pattern matching nothing is
    an error naming `key`. A local directory is accepted when it is a Hugging Face dataset saved
    with `save_to_disk`."""
    patterns = [spec] if isinstance(spec, str) else spec
    paths: list[str] = []
    for pattern in patterns:
        matches = _expand_remote(pattern, key) if is_remote(pattern) else _expand_local(pattern, key)
        for match in matches:
            if not match.endswith(SUPPORTED_SUFFIXES) and not _is_hf_dataset(Path(match)):
                raise DataError(f"{key}: {match!r} has an unsupported suffix; use one of {', '.join(SUPPORTED_SUFFIXES)}")
            paths.append(match)
    return paths


def _expand_local(pattern: str, key: str) -> list[str]:
    matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
    if not matches:
        raise DataError(f"{key}: no file matches {pattern!r} (relative paths start at {Path.cwd()})")
    for match in matches:
        path = Path(match)
        if path.is_dir() and not _is_hf_dataset(path):
            splits = sorted(p.name for p in path.iterdir() if _is_hf_dataset(p))
            hint = f"a dataset dict: name one split, e.g. {match}/{splits[0]}" if splits else f"name the files (e.g. {match}/*.jsonl)"
            raise DataError(f"{key}: {match!r} is a directory; {hint}")
    return matches


def _expand_remote(pattern: str, key: str) -> list[str]:
    """Remote globs: list everything under the part of the path before the first wildcard."""
    filesystem, path = _filesystem(pattern)
    scheme = pattern.split("://", 1)[0]
    try:
        if not any(char in path for char in GLOB_CHARS):
            info = filesystem.get_file_info(path)
            if info.type == pafs.FileType.File:
                return [pattern]
            if info.type == pafs.FileType.Directory:
                raise DataError(f"{key}: {pattern!r} is a directory; name the files (e.g. {pattern.rstrip('/')}/*.jsonl)")
            raise DataError(f"{key}: {pattern!r} does not exist")
        base = path[: min(path.find(char) for char in GLOB_CHARS if char in path)].rpartition("/")[0]
        listing = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as err:
        raise DataError(f"{key}: cannot list {pattern!r} ({err})") from None
    matches = sorted(
        f"{scheme}://{info.path}" for info in listing if info.type == pafs.FileType.File and fnmatch.fnmatchcase(info.path, path)
    )
    if not matches:
        raise DataError(f"{key}: no file matches {pattern!r}")
    return matches


def _open(path: str) -> IO[bytes]:
    if not is_remote(path):
        return open(path, "rb")
    filesystem, inner = _filesystem(path)
    try:
        return io.BufferedReader(filesystem.open_input_stream(inner))
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def _read_bytes(path: str) -> bytes:
    with _open(path) as handle:
        return handle.read()


def read_rows(path: str) -> Iterator[SourceRow]:
    """Yield one SourceRow per data line (JSONL, CSV), array element (JSON) or row (Parquet,
    saved Hugging Face dataset), numbered from 1 as a person would count them."""
    if not is_remote(path) and Path(path).is_dir():
        yield from _read_hf_dataset(Path(path))
    elif path.endswith(".json"):
        yield from _read_json_array(path)
    elif path.endswith(".csv"):
        yield from _read_csv(path)
    elif path.endswith(".parquet"):
        yield from _read_parquet(path)
    else:
        yield from _read_jsonl(path)


def _decode_lines(path: str) -> tuple[str, list[SourceRow]]:
    """The file as text; lines that are not UTF-8 are blanked (keeping line numbers) and reported."""
    data = _read_bytes(path).removeprefix(b"\xef\xbb\xbf")
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


def _read_csv(path: str) -> Iterator[SourceRow]:
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


def _read_parquet(path: str) -> Iterator[SourceRow]:
    number = 0
    if is_remote(path):
        filesystem, inner = _filesystem(path)
        parquet = pq.ParquetFile(filesystem.open_input_file(inner))  # random access: the footer first
    else:
        parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches():
        for record in batch.to_pylist():
            number += 1
            yield SourceRow(str(path), number, record)


def _read_hf_dataset(path: Path) -> Iterator[SourceRow]:
    import datasets

    dataset = datasets.load_from_disk(str(path))
    for number, record in enumerate(dataset, start=1):
        yield SourceRow(str(path), number, dict(record))


def _read_jsonl(path: str) -> Iterator[SourceRow]:
    with _open(path) as handle:
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


def _read_json_array(path: str) -> Iterator[SourceRow]:
    try:
        items = json.loads(_read_bytes(path).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a valid JSON document ({err})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: a .json data file must hold an array of objects")
    for number, record in enumerate(items, start=1):
        if isinstance(record, dict):
            yield SourceRow(str(path), number, record)
        else:
            yield SourceRow(str(path), number, None, f"not_an_object: got {type(record).__name__}")
