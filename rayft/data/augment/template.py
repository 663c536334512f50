"""Template-driven synthetic rows: `record` format strings filled from `slots`.

Rows are made in the driver (their number is the user's `count`), each checked with the
format's validation, so a template that cannot make a usable row fails before any training
with the key to fix.
"""

from __future__ import annotations

import json
from typing import Any

from rayft.augment_config import TemplateOp, TemplateValue
from rayft.config import ConfigError, DataConfig
from rayft.data.augment.rows import AUGMENTED, row_rng
from rayft.data.formats import validate_record

SYNTHETIC_ENTRY = -1
"""`entry` of synthetic rows: they come from no data.train entry."""


def synthetic_file_index(op_index: int) -> int:
    """A file index no real file has, one per template op, so (file_index, line, copy) stays unique."""
    return -1 - op_index


def fill(value: TemplateValue, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    return {key: fill(item, values) for key, item in value.items()}


def slot_values(spec: TemplateOp, op_index: int, seed: int) -> list[dict[str, str]]:
    """The slot values of each generated row, in line order."""
    names = list(spec.slots)
    if spec.combine == "zip":
        return [{name: spec.slots[name][i] for name in names} for i in range(spec.rows)]
    if spec.combine == "sample":
        rows = []
        for line in range(1, spec.rows + 1):
            rng = row_rng(seed, op_index, line)
            rows.append({name: spec.slots[name][int(rng.integers(len(spec.slots[name])))] for name in names})
        return rows
    total = spec.combinations()
    picks = range(total) if spec.rows == total else sorted(int(i) for i in row_rng(seed, op_index).choice(total, spec.rows, replace=False))
    return [_combination(spec.slots, names, pick) for pick in picks]


def _combination(slots: dict[str, list[str]], names: list[str], index: int) -> dict[str, str]:
    """The index-th combination in itertools.product order (the last slot changes fastest)."""
    values: dict[str, str] = {}
    for name in reversed(names):
        index, position = divmod(index, len(slots[name]))
        values[name] = slots[name][position]
    return {name: values[name] for name in names}


def template_rows(spec: TemplateOp, op_index: int, label: str, data: DataConfig, seed: int) -> list[dict[str, Any]]:
    """The op's rows in the pipeline's row shape; ConfigError naming data.augment.<i>.record when one is invalid."""
    rows = []
    for line, values in enumerate(slot_values(spec, op_index, seed), start=1):
        record = fill(spec.record, values)
        problem = validate_record(record, data)
        if problem:
            raise ConfigError(
                f"data.augment.{op_index}.record: generated row {line} is not a valid {data.format} row ({problem}); "
                f"slots {values}"
            )
        rows.append({
            "source": f"synthetic:{op_index}", "line": line, "entry": SYNTHETIC_ENTRY,
            "file_index": synthetic_file_index(op_index), "record": json.dumps(record, ensure_ascii=False),
            "copy": 1, AUGMENTED: label,
        })
    return rows
