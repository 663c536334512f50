"""The `data.augment` schema: one entry per augmentation op, told apart by `op`.

Kept out of config.py so that the op list grows here; config.py holds one field and one
validator call. Checks that need the task format (which fields exist, which are required)
run from DataConfig through `check_augment_specs`; checks that need files or Ray run in
rayft.data.augment.check_augment.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import TypeAliasType

MAX_COPY = 255
"""Copies of one source row are numbered 1..MAX_COPY over all ops, so (file_index, line, copy) stays a unique key."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _SourceOp(_Spec):
    """An op that makes new rows from training rows."""

    copies: int = Field(1, ge=1, le=MAX_COPY, description="Augmented rows made from each chosen source row.")
    p: float = Field(1.0, ge=0, le=1, description="Probability that a source row is augmented by this op at all.")
    fields: list[str] | None = Field(
        None,
        description=(
            "Roles (or their columns) the op changes; default: the format's prompt roles, never the "
            "answer (output/answer/label/summary) unless listed here. For chat, user turns."
        ),
    )

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must name at least one field (or leave it unset for the prompt roles)")
        return value


class WordDropoutOp(_SourceOp):
    """Drop each word with probability `rate` (at least one word stays)."""

    op: Literal["word_dropout"] = "word_dropout"
    rate: float = Field(0.1, ge=0, le=1, description="Probability that each word is dropped.")


class WordSwapOp(_SourceOp):
    """Swap `swaps` randomly chosen pairs of adjacent words."""

    op: Literal["word_swap"] = "word_swap"
    swaps: int = Field(1, ge=1, description="Adjacent-word swaps per augmented field.")


class SynonymOp(_SourceOp):
    """Replace words found in a user-given synonym list (case-insensitive, punctuation kept)."""

    op: Literal["synonym"] = "synonym"
    synonyms: dict[str, list[str]] | str = Field(
        description="Mapping word -> alternatives, or the path of a JSON file holding one."
    )
    rate: float = Field(1.0, ge=0, le=1, description="Probability that each replaceable word is replaced.")

    @field_validator("synonyms")
    @classmethod
    def _usable_synonyms(cls, value: dict[str, list[str]] | str) -> dict[str, list[str]] | str:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must be a mapping or the path of a JSON file")
            return value
        problem = synonyms_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def synonyms_problem(mapping: Any) -> str | None:
    """Why `mapping` is not a usable synonym list (shared by the config and the JSON-file loader)."""
    if not isinstance(mapping, Mapping) or not mapping:
        return "must be a non-empty mapping of word -> list of alternatives"
    for word, alternatives in mapping.items():
        if not isinstance(word, str) or not word.strip() or len(word.split()) != 1:
            return f"key {word!r} must be a single word"
        if not isinstance(alternatives, list) or not alternatives:
            return f"{word!r}: needs a non-empty list of alternatives"
        if any(not isinstance(alt, str) or not alt.strip() for alt in alternatives):
            return f"{word!r}: alternatives must be non-empty strings"
    return None


class ParaphraseOp(_SourceOp):
    """Rewrite fields with a local seq2seq or causal model (optionally and back: back-translation)."""

    op: Literal["paraphrase"] = "paraphrase"
    model: str = Field(description="Local directory of a seq2seq or causal LM (and its tokenizer).")
    prompt: str = Field("{text}", description="Model input, a format string with one {text} placeholder.")
    back_model: str | None = Field(
        None, description="Second model that rewrites the first one's output (back-translation: there and back)."
    )
    back_prompt: str = Field("{text}", description="Input of back_model, with one {text} placeholder.")
    max_new_tokens: int = Field(64, ge=1, description="Longest generation.")
    num_beams: int = Field(1, ge=1, description="Beam width (1: greedy). Copy k is the k-th best beam.")
    batch_size: int = Field(16, ge=1, description="Rows per generate call.")
    concurrency: int = Field(1, ge=1, description="Actors in the pool; each loads the model once.")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per actor (also its torch threads).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor.")

    @field_validator("prompt", "back_prompt")
    @classmethod
    def _one_text_placeholder(cls, value: str) -> str:
        names = placeholders(value)
        if names != {"text"}:
            raise ValueError(f"needs exactly the placeholder {{text}}, got {sorted(names) or 'none'}")
        return value

    @model_validator(mode="after")
    def _enough_beams(self) -> ParaphraseOp:
        if self.copies > self.num_beams:
            raise_at(
                ("copies",),
                f"{self.copies} > num_beams ({self.num_beams}): decoding is deterministic, so distinct copies "
                "are the best beams; raise num_beams",
                self.copies,
            )
        return self


TemplateValue = TypeAliasType("TemplateValue", 'str | list[TemplateValue] | dict[str, TemplateValue]')


class TemplateOp(_Spec):
    """Synthetic rows: `record` format strings filled from `slots`."""

    op: Literal["template"] = "template"
    record: dict[str, TemplateValue] = Field(
        description="The generated row: column -> format string with {slot} placeholders (lists/dicts nest, e.g. chat messages)."
    )
    slots: dict[str, list[str]] = Field(default_factory=dict, description="Values per placeholder name.")
    combine: Literal["sample", "product", "zip"] = Field(
        "sample",
        description=(
            "sample: each row draws every slot independently (seeded); product: distinct combinations "
            "(a seeded choice when count is below their number); zip: the i-th row takes the i-th value of every slot."
        ),
    )
    count: int | None = Field(
        None, ge=1, description="Rows to generate; required for sample, default all combinations for product/zip."
    )

    @field_validator("slots")
    @classmethod
    def _slots_have_values(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, values in value.items():
            if not name.isidentifier():
                raise ValueError(f"slot name {name!r} must be an identifier")
            if not values:
                raise ValueError(f"slot {name!r} needs at least one value")
        return value

    @model_validator(mode="after")
    def _slots_fill_record(self) -> TemplateOp:
        for path, text in template_strings(self.record):
            loc = ("record", *path.split("."))
            try:
                missing = sorted(placeholders(text) - set(self.slots))
            except ValueError as err:
                raise_at(loc, str(err), text)
            if missing:
                raise_at(loc, f"placeholders without slots: {missing} (slots: {sorted(self.slots)})", text)
        if self.combine == "sample" and self.count is None:
            raise_at(("count",), "required when combine is 'sample'", None)
        if self.combine == "zip" and len({len(v) for v in self.slots.values()}) > 1:
            raise_at(("slots",), "combine 'zip' needs slots of equal length", {k: len(v) for k, v in self.slots.items()})
        available = self.combinations()
        if self.combine != "sample" and self.count is not None and self.count > available:
            raise_at(("count",), f"exceeds the {available} {self.combine} combinations of the slots", self.count)
        return self

    def combinations(self) -> int:
        """How many distinct rows product/zip can make (1 when there are no slots)."""
        sizes = [len(values) for values in self.slots.values()]
        if self.combine == "zip":
            return sizes[0] if sizes else 1
        total = 1
        for size in sizes:
            total *= size
        return total

    @property
    def rows(self) -> int:
        return self.count if self.count is not None else self.combinations()


AugmentSpec = Annotated[
    WordDropoutOp | WordSwapOp | SynonymOp | ParaphraseOp | TemplateOp, Field(discriminator="op")
]
SOURCE_OPS = (WordDropoutOp, WordSwapOp, SynonymOp, ParaphraseOp)
AUGMENT_OPS = frozenset(spec.model_fields["op"].default for spec in (*SOURCE_OPS, TemplateOp))


def raise_at(loc: tuple[str | int, ...], message: str, value: Any) -> NoReturn:
    """Fail with an error located at `loc` below the model being validated (pydantic prefixes
    the outer keys), so the message names e.g. data.augment.0.copies, not data.augment.0."""
    raise ValidationError.from_exception_data("augment", [_details(loc, message, value)])


def _details(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)


def placeholders(template: str) -> set[str]:
    """Names a format string fills; only plain {name} placeholders (ValueError otherwise)."""
    names: set[str] = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"placeholder {{{written}}} must be a plain {{name}}")
        names.add(name)
    return names


def template_strings(value: TemplateValue, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, string) for every string inside a nested template value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from template_strings(item, f"{path}.{index}" if path else str(index))
    else:
        for key, item in value.items():
            yield from template_strings(item, f"{path}.{key}" if path else key)


def check_augment_specs(specs: list[Any], roles: dict[str, bool], columns: Mapping[str, str]) -> None:
    """Check the specs against the task format; raise a ValidationError located at augment.<i>.<key>.

    `roles` maps role -> required, `columns` role -> column (data.fields).
    """
    errors: list[InitErrorDetails] = []

    def error(loc: tuple[str | int, ...], message: str, value: Any) -> None:
        errors.append(_details(("augment", *loc), message, value))

    known = set(roles) | {columns.get(role, role) for role in roles}
    total_copies = 0
    for index, spec in enumerate(specs):
        if isinstance(spec, TemplateOp):
            _check_template(index, spec, roles, columns, error)
            continue
        total_copies += spec.copies
        for field in spec.fields or []:
            if field not in known:
                error((index, "fields"), f"{field!r} is not a role or column of this format (known: {', '.join(sorted(known))})", spec.fields)
    if total_copies > MAX_COPY:
        error((), f"copies add up to {total_copies} over the ops; at most {MAX_COPY} per source row", total_copies)
    if errors:
        raise ValidationError.from_exception_data("augment", errors)


ErrorSink = Callable[[tuple[str | int, ...], str, Any], None]


def _check_template(index: int, spec: TemplateOp, roles: dict[str, bool], columns: Mapping[str, str], error: ErrorSink) -> None:
    """Every required column is generated and can never come out empty."""
    blank_slots = {name for name, values in spec.slots.items() if any(not v.strip() for v in values)}
    for role, required in roles.items():
        column = columns.get(role, role)
        if not required:
            continue
        if column not in spec.record:
            error((index, "record"), f"misses the required column {column!r}", list(spec.record))
            continue
        for path, text in template_strings(spec.record[column], column):
            filled = text.format(**{name: "" if name in blank_slots else "x" for name in placeholders(text)})
            if not filled.strip():
                error((index, "record", *path.split(".")), "can come out empty (a blank slot value or no text)", text)
