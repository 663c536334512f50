"""Task formats: turn a validated record into (prompt, response) text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayft.config import DataConfig


@dataclass(frozen=True)
class FormattedExample:
    prompt: str
    response: str


def validate_instruction(record: dict[str, Any], data: DataConfig) -> str | None:
    """Return why the record cannot be used, or None when it is fine."""
    fields = data.fields
    for name, required in ((fields.instruction, True), (fields.output, True), (fields.input, False)):
        value = record.get(name)
        if value is None:
            if required:
                return f"missing_field: {name!r}"
            continue
        if not isinstance(value, str):
            return f"wrong_type: {name!r} must be a string, got {type(value).__name__}"
        if required and not value.strip():
            return f"empty_field: {name!r}"
    return None


def format_instruction(record: dict[str, Any], data: DataConfig) -> FormattedExample:
    fields = data.fields
    values = {
        "instruction": record[fields.instruction].strip(),
        "input": (record.get(fields.input) or "").strip(),
        "output": record[fields.output].strip(),
    }
    template = data.template if values["input"] else data.template_no_input
    extra = {k: v for k, v in record.items() if isinstance(v, str) and k not in values}
    prompt = template.format(**extra, **values)
    return FormattedExample(prompt=prompt, response=data.response_prefix + values["output"])
