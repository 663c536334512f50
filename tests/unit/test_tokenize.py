from __future__ import annotations

from transformers import ByT5Tokenizer

from rayft.config import DataConfig
from rayft.data.batching import Example, collate
from rayft.data.formats import format_instruction, validate_instruction
from rayft.data.tokenize import IGNORE_INDEX, Dropped, TokenizedExample, tokenize_example


def _ids(tokenizer: ByT5Tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_instruction_template_with_and_without_input() -> None:
    data = DataConfig(train="x.jsonl")
    with_input = format_instruction({"instruction": "Add", "input": "1 2", "output": "3"}, data)
    assert with_input.prompt == "Instruction: Add\nInput: 1 2\nResponse:"
    assert with_input.response == " 3"
    without = format_instruction({"instruction": "Say hi", "output": "hi"}, data)
    assert without.prompt == "Instruction: Say hi\nResponse:"


def test_field_names_are_configurable() -> None:
    data = DataConfig(train="x.jsonl", fields={"instruction": "q", "input": "ctx", "output": "a"}, template="{instruction}|{input}|")
    example = format_instruction({"q": "Q", "ctx": "C", "a": "A"}, data)
    assert (example.prompt, example.response) == ("Q|C|", " A")


def test_validation_reasons() -> None:
    data = DataConfig(train="x.jsonl")
    assert validate_instruction({"instruction": "i", "output": "o"}, data) is None
    assert validate_instruction({"output": "o"}, data) == "missing_field: 'instruction'"
    assert validate_instruction({"instruction": "i", "output": "  "}, data) == "empty_field: 'output'"
    assert validate_instruction({"instruction": 3, "output": "o"}, data) == "wrong_type: 'instruction' must be a string, got int"
    assert validate_instruction({"instruction": "i", "input": 4, "output": "o"}, data).startswith("wrong_type: 'input'")


def test_labels_mask_the_prompt_and_train_response_plus_eos(byte_tokenizer: ByT5Tokenizer) -> None:
    result = tokenize_example("Q:", " yes", byte_tokenizer, 64, "drop")
    assert isinstance(result, TokenizedExample)
    prompt, response = _ids(byte_tokenizer, "Q:"), _ids(byte_tokenizer, " yes")
    assert result.input_ids == prompt + response + [byte_tokenizer.eos_token_id]
    assert result.labels == [IGNORE_INDEX] * len(prompt) + response + [byte_tokenizer.eos_token_id]
    assert result.prompt_len == len(prompt)


def test_overlength_drop_truncate_error(byte_tokenizer: ByT5Tokenizer) -> None:
    prompt, response = "p" * 20, " abc"  # 20 + 4 + EOS = 25 tokens
    dropped = tokenize_example(prompt, response, byte_tokenizer, 10, "drop")
    assert isinstance(dropped, Dropped) and dropped.reason == "overlength"
    assert isinstance(tokenize_example(prompt, response, byte_tokenizer, 10, "error"), Dropped)
    truncated = tokenize_example(prompt, response, byte_tokenizer, 10, "truncate")
    assert isinstance(truncated, TokenizedExample)
    assert len(truncated.input_ids) == 10
    assert truncated.prompt_len == 5, "only the prompt is cut; the whole response and EOS stay"
    assert truncated.labels[5:] == _ids(byte_tokenizer, response) + [byte_tokenizer.eos_token_id]


def test_truncate_never_removes_the_whole_response(byte_tokenizer: ByT5Tokenizer) -> None:
    result = tokenize_example("p", " " + "r" * 30, byte_tokenizer, 10, "truncate")
    assert isinstance(result, Dropped) and result.reason == "overlength"


def test_padding_with_eos_keeps_the_trained_eos() -> None:
    """Pins: a tokenizer whose pad id equals EOS must not mask the response's EOS label."""
    eos = 1
    examples = [Example([5, 6, 7, eos], [-100, 6, 7, eos], 1, "x"), Example([5, eos], [-100, eos], 1, "y")]
    batch = collate(examples, pad_id=eos)
    assert batch["input_ids"].tolist() == [[5, 6, 7, eos], [5, eos, eos, eos]]
    assert batch["labels"].tolist() == [[-100, 6, 7, eos], [-100, eos, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
