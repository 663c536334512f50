"""Task formats: validate a record, then render it as text segments that are or are not trained.

Every format becomes a list of (text, trained) segments; tokenization masks the untrained ones.
instruction / qa / classification / summarization: [(prompt, False), (response, True)];
text: [(text, True)]; chat: the conversation rendered by a chat template, assistant turns trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from rayft.config import DataConfig

# Used when the tokenizer has no chat template of its own (byte-level tiny models, base models).
# The EOS after each assistant turn is part of the trained text, so the model learns to stop.
DEFAULT_CHAT_TEMPLATE = (
    # Newlines sit inside expressions: transformers renders templates with trim_blocks.
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
CHAT_ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class FormattedExample:
    segments: tuple[tuple[str, bool], ...]
    reference: str
    """The text a generation is compared with (the answer, the last assistant turn); "" for text."""
    label: str | None = None
    alternatives: tuple[str, ...] = ()
    """Further valid answers when the answer column holds a list (the first one trains)."""


def validate_record(record: dict[str, Any], data: DataConfig) -> str | None:
    """Why the record cannot be used (`reason: detail`), or None when it is fine."""
    for role, required in data.task.roles.items():
        column = data.column(role)
        value = record.get(column)
        if value is None:
            if required:
                return f"missing_field: {column!r}"
            continue
        if role == "messages":
            problem = _messages_problem(value)
            if problem:
                return problem
            continue
        if role == "label":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                return f"wrong_type: {column!r} must be a string or an integer, got {type(value).__name__}"
            if not str(value).strip():
                return f"empty_field: {column!r}"
            continue
        if role == data.task.answer and isinstance(value, list):  # several valid answers
            if not value or not all(isinstance(v, str) and v.strip() for v in value):
                return f"wrong_type: {column!r} must be a string or a non-empty list of non-empty strings"
            continue
        if not isinstance(value, str):
            return f"wrong_type: {column!r} must be a string, got {type(value).__name__}"
        if required and not value.strip():
            return f"empty_field: {column!r}"
    return None


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "wrong_type: 'messages' must be a non-empty list of {role, content}"
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return f"wrong_type: messages[{number}] needs a string 'content'"
        if message.get("role") not in CHAT_ROLES:
            return f"bad_role: messages[{number}] role {message.get('role')!r} (expected one of {sorted(CHAT_ROLES)})"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no_assistant_turn: nothing to train on"
    return None


def format_record(record: dict[str, Any], data: DataConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> FormattedExample:
    """Render a validated record (chat needs the tokenizer for its template)."""
    if data.format == "chat":
        if tokenizer is None:
            raise ValueError("the chat format needs a tokenizer to render its template")
        return _format_chat(record[data.column("messages")], data, tokenizer)
    task = data.task
    values = {role: _text(record.get(data.column(role))) for role in task.roles}
    if task.answer is None:  # plain text: everything trains
        return FormattedExample(((values["text"], True),), reference="")
    optional_empty = any(not values[role] for role, required in task.roles.items() if not required)
    template = _choose_template(data, optional_empty)
    extra = {k: v for k, v in record.items() if isinstance(v, str) and k not in values}
    prompt = template.format(**{**extra, **values})
    answer = values[task.answer]
    label = answer if data.format == "classification" else None
    given = record.get(data.column(task.answer))
    alternatives = tuple(_text(v) for v in given[1:]) if isinstance(given, list) else ()
    return FormattedExample(
        ((prompt, False), (data.response_prefix + answer, True)), reference=answer, label=label, alternatives=alternatives
    )


def _text(value: Any) -> str:
    """A field as text; of a list of valid answers, the first (the one that trains)."""
    if isinstance(value, list):
        value = value[0] if value else None
    return "" if value is None else str(value).strip()


def _choose_template(data: DataConfig, optional_empty: bool) -> str:
    """The user's templates first; a user `template` also serves rows without the optional role."""
    if optional_empty and data.template_short:
        return data.template_short
    if data.template:
        return data.template
    task = data.task
    return task.template_short if optional_empty and task.template_short else task.template


def _format_chat(messages: list[dict[str, str]], data: DataConfig, tokenizer: PreTrainedTokenizerBase) -> FormattedExample:
    """Segments from successive renders of the conversation: the text each turn adds is one
    segment, trained when the turn is the assistant's (its generation prompt stays untrained)."""
    template = tokenizer.chat_template or data.chat_template or DEFAULT_CHAT_TEMPLATE

    def render(turns: list[dict[str, str]], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(turns, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt)

    segments: list[tuple[str, bool]] = []
    rendered = ""
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = render(messages[:index], True)
            _append(segments, rendered, prompt, False)
            rendered = prompt
        full = render(messages[: index + 1], False)
        _append(segments, rendered, full, message["role"] == "assistant")
        rendered = full
    last_answer = next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
    return FormattedExample(tuple(segments), reference=last_answer.strip())


def _append(segments: list[tuple[str, bool]], before: str, after: str, trained: bool) -> None:
    if not after.startswith(before):
        raise ValueError("chat template is not incremental: a later render does not extend the earlier one")
    if after[len(before) :]:
        segments.append((after[len(before) :], trained))
