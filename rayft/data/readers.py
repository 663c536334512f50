"""Read rows from JSONL / JSON files, remembering where each came from.

Every row carries its source file and line so that a bad row can be reported and quarantined
precisely; nothing is dropped silently.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


SUPPORTED_SUFFIXES = (".jsonl", ".json")


def expand_paths(spec: str | list[str], key: str) -> list[Path]:
    """Resolve a path, glob or list of them; a pattern matching nothing is an error naming `key`."""
    patterns = [spec] if isinstance(spec, str) else spec
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not matches:
            raise DataError(f"{key}: no file matches {pattern!r} (relative paths start at {Path.cwd()})")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                raise DataError(f"{key}: {match!r} is a directory; name the files (e.g. {match}/*.jsonl)")
            if path.suffix not in SUPPORTED_SUFFIXES:
                raise DataError(f"{key}: {match!r} has an unsupported suffix; use one of {', '.join(SUPPORTED_SUFFIXES)}")
            paths.append(path)
    return paths


def read_rows(path: Path) -> Iterator[SourceRow]:
    """Yield one SourceRow per data line (JSONL) or array element (JSON)."""
    if path.suffix == ".json":
        yield from _read_json_array(path)
    else:
        yield from _read_jsonl(path)


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
