from __future__ import annotations

import pytest
from transformers import ByT5Tokenizer

from rayft.config import DataConfig
from rayft.data.batching import Example, collate
from rayft.data.classification import tokenize_for_head
from rayft.data.formats import format_record, validate_record
from rayft.data.tokenize import IGNORE_INDEX, Dropped, TokenizedExample, tokenize_segments


def _ids(tokenizer: ByT5Tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _data(**values) -> DataConfig:
    return DataConfig(train="x.jsonl", **values)


def test_instruction_template_with_and_without_input() -> None:
    with_input = format_record({"instruction": "Add", "input": "1 2", "output": "3"}, _data())
    assert with_input.segments == (("Instruction: Add\nInput: 1 2\nResponse:", False), (" 3", True))
    assert with_input.reference == "3"
    without = format_record({"instruction": "Say hi", "output": "hi"}, _data())
    assert without.segments[0] == ("Instruction: Say hi\nResponse:", False)


@pytest.mark.parametrize(
    ("task", "record", "prompt", "answer"),
    [
        ("qa", {"question": "Capital of France?", "answer": "Paris"}, "Question: Capital of France?\nAnswer:", "Paris"),
        ("qa", {"question": "Who?", "context": "Bob came.", "answer": "Bob"}, "Context: Bob came.\nQuestion: Who?\nAnswer:", "Bob"),
        ("classification", {"text": "great film", "label": "positive"}, "Text: great film\nLabel:", "positive"),
        ("classification", {"text": "meh", "label": 0}, "Text: meh\nLabel:", "0"),
        ("summarization", {"document": "Long text.", "summary": "Short."}, "Document: Long text.\nSummary:", "Short."),
    ],
)
def test_prompted_formats_use_their_default_templates(task, record, prompt, answer) -> None:
    example = format_record(record, _data(format=task))
    assert example.segments == ((prompt, False), (" " + answer, True))
    assert example.reference == answer
    assert example.label == (answer if task == "classification" else None)


def test_text_format_trains_everything() -> None:
    assert format_record({"text": "Once upon a time."}, _data(format="text")).segments == (("Once upon a time.", True),)


def test_field_names_and_custom_templates() -> None:
    data = _data(fields={"instruction": "q", "input": "ctx", "output": "a"}, template="{instruction}|{input}|{lang}|")
    example = format_record({"q": "Q", "ctx": "C", "a": "A", "lang": "en"}, data)
    assert example.segments == (("Q|C|en|", False), (" A", True))
    assert format_record({"q": "Q", "a": "A", "lang": "en"}, data).segments[0] == ("Q||en|", False), "a custom template serves short rows too"


def test_unknown_field_role_names_the_key() -> None:
    from rayft.config import ConfigError, config_from_dict
    from tests.conftest import tiny_experiment

    with pytest.raises(ConfigError, match=r"^data\.fields: 'text' is not a role of format 'instruction'"):
        config_from_dict(tiny_experiment(__import__("pathlib").Path("/tmp"), data={"fields": {"text": "body"}}))


def test_validation_reasons() -> None:
    data = _data()
    assert validate_record({"instruction": "i", "output": "o"}, data) is None
    assert validate_record({"output": "o"}, data) == "missing_field: 'instruction'"
    assert validate_record({"instruction": "i", "output": "  "}, data) == "empty_field: 'output'"
    assert validate_record({"instruction": 3, "output": "o"}, data) == "wrong_type: 'instruction' must be a string, got int"
    assert validate_record({"instruction": "i", "input": 4, "output": "o"}, data).startswith("wrong_type: 'input'")
    classification = _data(format="classification")
    assert validate_record({"text": "t", "label": 2}, classification) is None
    assert validate_record({"text": "t", "label": 1.5}, classification).startswith("wrong_type: 'label'")
    chat = _data(format="chat")
    assert validate_record({"messages": [{"role": "user", "content": "hi"}]}, chat).startswith("no_assistant_turn")
    assert validate_record({"messages": [{"role": "robot", "content": "x"}]}, chat).startswith("bad_role: messages[0]")
    assert validate_record({"messages": "hi"}, chat).startswith("wrong_type: 'messages'")


def test_chat_trains_assistant_turns_only(byte_tokenizer: ByT5Tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ciao"},
    ]
    example = format_record({"messages": messages}, _data(format="chat"), byte_tokenizer)
    assert [text for text, trained in example.segments if trained] == ["Hello</s>\n", "Ciao</s>\n"]
    assert "".join(text for text, _ in example.segments) == (
        "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello</s>\n<|user|>\nBye\n<|assistant|>\nCiao</s>\n"
    )
    assert example.reference == "Ciao"
    tokens = tokenize_segments(example.segments, byte_tokenizer, 512, "drop", append_eos=False)
    assert isinstance(tokens, TokenizedExample)
    trained = [t for t, label in zip(tokens.input_ids, tokens.labels) if label != IGNORE_INDEX]
    assert trained == _ids(byte_tokenizer, "Hello</s>\n") + _ids(byte_tokenizer, "Ciao</s>\n")
    assert trained.count(byte_tokenizer.eos_token_id) == 2, "each assistant turn ends with a trained EOS"
    assert tokens.input_ids[tokens.prompt_len :] == _ids(byte_tokenizer, "Ciao</s>\n")


def test_labels_mask_the_prompt_and_train_response_plus_eos(byte_tokenizer: ByT5Tokenizer) -> None:
    result = tokenize_segments([("Q:", False), (" yes", True)], byte_tokenizer, 64, "drop")
    assert isinstance(result, TokenizedExample)
    prompt, response = _ids(byte_tokenizer, "Q:"), _ids(byte_tokenizer, " yes")
    assert result.input_ids == prompt + response + [byte_tokenizer.eos_token_id]
    assert result.labels == [IGNORE_INDEX] * len(prompt) + response + [byte_tokenizer.eos_token_id]
    assert result.prompt_len == len(prompt)


def test_overlength_drop_truncate_error(byte_tokenizer: ByT5Tokenizer) -> None:
    segments = [("p" * 20, False), (" abc", True)]  # 20 + 4 + EOS = 25 tokens
    dropped = tokenize_segments(segments, byte_tokenizer, 10, "drop")
    assert isinstance(dropped, Dropped) and dropped.reason == "overlength"
    assert isinstance(tokenize_segments(segments, byte_tokenizer, 10, "error"), Dropped)
    truncated = tokenize_segments(segments, byte_tokenizer, 10, "truncate")
    assert isinstance(truncated, TokenizedExample)
    assert len(truncated.input_ids) == 10
    assert truncated.prompt_len == 5, "only the prompt is cut; the whole response and EOS stay"
    assert truncated.labels[5:] == _ids(byte_tokenizer, " abc") + [byte_tokenizer.eos_token_id]


def test_truncation_is_flagged_so_it_can_be_counted(byte_tokenizer: ByT5Tokenizer) -> None:
    """Pins the flag the counts and the report read: set only when truncate actually cut a row
    (prompted or plain text, or a classification head's text), never on rows that fit."""
    segments = [("p" * 20, False), (" abc", True)]  # 25 tokens
    assert tokenize_segments(segments, byte_tokenizer, 10, "truncate").truncated is True
    assert tokenize_segments(segments, byte_tokenizer, 25, "truncate").truncated is False, "exactly max_length fits"
    assert tokenize_segments([("abcdefghij", True)], byte_tokenizer, 4, "truncate").truncated is True
    assert tokenize_segments([("Q:", False), (" yes", True)], byte_tokenizer, 64, "drop").truncated is False
    head = _data(format="classification", max_length=8, overlength="truncate")
    cut = tokenize_for_head({"text": "abcdefghij", "label": "x"}, head, byte_tokenizer, {"x": 0})  # 10 bytes + EOS
    whole = tokenize_for_head({"text": "abc", "label": "x"}, head, byte_tokenizer, {"x": 0})
    assert isinstance(cut, TokenizedExample) and isinstance(whole, TokenizedExample)
    assert (len(cut.input_ids), cut.truncated, whole.truncated) == (8, True, False)


def test_truncate_never_removes_the_whole_response(byte_tokenizer: ByT5Tokenizer) -> None:
    result = tokenize_segments([("p", False), (" " + "r" * 30, True)], byte_tokenizer, 10, "truncate")
    assert isinstance(result, Dropped) and result.reason == "overlength"


def test_truncated_plain_text_keeps_its_beginning_without_eos(byte_tokenizer: ByT5Tokenizer) -> None:
    result = tokenize_segments([("abcdefghij", True)], byte_tokenizer, 4, "truncate")
    assert isinstance(result, TokenizedExample)
    assert result.input_ids == result.labels == _ids(byte_tokenizer, "abcd")


def test_nothing_to_train_is_dropped(byte_tokenizer: ByT5Tokenizer) -> None:
    result = tokenize_segments([("prompt only", False)], byte_tokenizer, 64, "drop", append_eos=False)
    assert isinstance(result, Dropped) and result.reason == "no_trainable_tokens"


def test_padding_with_eos_keeps_the_trained_eos() -> None:
    """Pins: a tokenizer whose pad id equals EOS must not mask the response's EOS label."""
    eos = 1
    examples = [Example([5, 6, 7, eos], [-100, 6, 7, eos], 1, "x"), Example([5, eos], [-100, eos], 1, "y")]
    batch = collate(examples, pad_id=eos)
    assert batch["input_ids"].tolist() == [[5, 6, 7, eos], [5, eos, eos, eos]]
    assert batch["labels"].tolist() == [[-100, 6, 7, eos], [-100, eos, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
