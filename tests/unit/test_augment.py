"""Augmentation without Ray: the pure ops, seeding, labels, templates, config errors, driver checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayft.augment_config import TemplateOp
from rayft.config import ConfigError, DataConfig, config_from_dict, load_config
from rayft.data.augment import check_augment
from rayft.data.augment.noise import replace_synonyms, word_dropout, word_swap
from rayft.data.augment.rows import chosen, copy_offsets, field_texts, op_labels, row_rng, target_columns, with_texts
from rayft.data.augment.template import slot_values, template_rows
from rayft.data.formats import validate_record
from rayft.data.report import DataReport, render_markdown
from tests.conftest import REPO, tiny_experiment

TEXT = "The quick brown fox\njumps over  the lazy dog."
SYNONYMS = {"quick": ["fast", "speedy"], "dog": ["hound"]}


def test_word_dropout_exact_output_keeps_layout_and_a_word() -> None:
    assert word_dropout(TEXT, row_rng(0), 0.3) == "The\njumps over  the lazy dog."
    assert word_dropout(TEXT, row_rng(7), 0.5) == "The quick brown over lazy dog."
    assert word_dropout(TEXT, row_rng(0), 0.0) == TEXT
    assert word_dropout("one two three", row_rng(0), 1.0) in {"one", "two", "three"}, "one word always stays"
    assert word_dropout("  ", row_rng(0), 1.0) == "  "


def test_word_swap_exact_output() -> None:
    assert word_swap(TEXT, row_rng(7), 1) == "The quick brown fox\njumps over  the dog. lazy"
    assert word_swap(TEXT, row_rng(0), 2) == "The quick brown fox\njumps lazy  over the dog."
    assert word_swap("alone", row_rng(0), 3) == "alone"
    assert sorted(word_swap(TEXT, row_rng(3), 5).split()) == sorted(TEXT.split()), "swaps only reorder words"


def test_synonyms_keep_case_and_punctuation() -> None:
    text = "The quick fox, the QUICK dog."
    assert replace_synonyms(text, row_rng(7), SYNONYMS, 1.0) == "The speedy fox, the SPEEDY hound."
    assert replace_synonyms(text, row_rng(2), SYNONYMS, 0.5) == "The fast fox, the QUICK hound."
    assert replace_synonyms("Quick!", row_rng(0), {"quick": ["fast"]}, 1.0) == "Fast!"
    assert replace_synonyms(text, row_rng(0), SYNONYMS, 0.0) == text


def test_row_seeding_depends_on_identity_not_call_order() -> None:
    assert row_rng(1, 2, 3).random() == row_rng(1, 2, 3).random()
    assert row_rng(1, 2, 3).random() != row_rng(1, 2, 4).random()
    assert row_rng(0, -1, 5).random() == row_rng(0, -1, 5).random(), "negative keys (synthetic rows) are allowed"
    picks = [chosen(0, 0, 0, line, 0.3) for line in range(1, 2001)]
    assert 500 < sum(picks) < 700, "p=0.3 picks about 30% of the rows"
    assert all(chosen(0, 0, 0, line, 1.0) for line in range(10)) and not any(chosen(0, 0, 0, line, 0.0) for line in range(10))


def test_labels_and_copy_numbers_are_distinct_per_op() -> None:
    data = DataConfig(train="x", augment=[
        {"op": "word_dropout", "copies": 2}, {"op": "word_swap", "copies": 3},
        {"op": "template", "record": {"instruction": "a", "output": "b"}, "count": 1}, {"op": "word_dropout"},
    ])
    assert op_labels(data.augment) == ["word_dropout.0", "word_swap", "template", "word_dropout.3"]
    assert copy_offsets(data.augment) == [0, 2, 5, 5], "op 0 copies 1-2, op 1 copies 3-5, op 3 copy 6"


def test_default_fields_are_the_prompt_side() -> None:
    assert target_columns(None, DataConfig(train="x")) == ["instruction", "input"]
    assert target_columns(None, DataConfig(train="x", format="classification", fields={"text": "sentence"})) == ["sentence"]
    assert target_columns(["label"], DataConfig(train="x", format="classification")) == ["label"], "the answer only when listed"
    assert target_columns(None, DataConfig(train="x", format="chat")) == ["messages"]


def test_chat_texts_are_user_turns_and_the_record_is_not_mutated() -> None:
    record = {"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "  "},
    ]}
    before = json.dumps(record)
    texts = field_texts(record, ["messages"])
    assert texts == [(("messages", 1), "hi there")], "blank turns, system and assistant turns are left alone"
    changed = with_texts(record, {("messages", 1): "HI"})
    assert changed["messages"][1] == {"role": "user", "content": "HI"} and changed["messages"][2]["content"] == "hello"
    assert json.dumps(record) == before


def _template(**fields: object) -> TemplateOp:
    return TemplateOp.model_validate({"record": {"instruction": "Say {a}", "output": "{a}{b}"}, "slots": {"a": ["1", "2", "3"], "b": ["x", "y"]}, **fields})


def test_template_combinations() -> None:
    assert slot_values(_template(combine="product"), 0, 0) == [
        {"a": a, "b": b} for a in ["1", "2", "3"] for b in ["x", "y"]
    ], "product order, last slot fastest"
    assert slot_values(_template(combine="product", count=3), 0, 0) == [{"a": "2", "b": "y"}, {"a": "3", "b": "x"}, {"a": "3", "b": "y"}]
    assert slot_values(_template(combine="sample", count=4), 0, 0) == [
        {"a": "3", "b": "x"}, {"a": "1", "b": "y"}, {"a": "3", "b": "y"}, {"a": "1", "b": "y"},
    ]
    zipped = TemplateOp.model_validate({"record": {"instruction": "{a}", "output": "{b}"}, "slots": {"a": ["1", "2"], "b": ["x", "y"]}, "combine": "zip"})
    assert slot_values(zipped, 0, 0) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]


def test_template_rows_have_reserved_keys_and_are_valid() -> None:
    data = DataConfig(train="x", augment=[{"op": "word_swap"}, _template(combine="product").model_dump()])
    rows = template_rows(data.augment[1], 1, "template", data, seed=0)
    assert [(r["source"], r["file_index"], r["line"], r["copy"], r["entry"]) for r in rows[:2]] == [
        ("synthetic:1", -2, 1, 1, -1), ("synthetic:1", -2, 2, 1, -1),
    ]
    assert [json.loads(r["record"]) for r in rows[:2]] == [{"instruction": "Say 1", "output": "1x"}, {"instruction": "Say 1", "output": "1y"}]
    assert all(validate_record(json.loads(r["record"]), data) is None and r["augmented"] == "template" for r in rows)


def test_invalid_generated_row_names_the_record_key(tmp_path: Path) -> None:
    data = DataConfig(train="x", format="chat", augment=[{
        "op": "template", "count": 2, "slots": {"q": ["hi", "yo"]},
        "record": {"messages": [{"role": "user", "content": "{q}"}, {"role": "user", "content": "again"}]},
    }])
    with pytest.raises(ConfigError, match=r"^data\.augment\.0\.record: generated row 1 is not a valid chat row \(no_assistant_turn"):
        check_augment(data, seed=0)


def test_driver_checks_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.augment\.0\.synonyms: synonym file .* not found"):
        check_augment(DataConfig(train="x", augment=[{"op": "synonym", "synonyms": str(tmp_path / "none.json")}]), 0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"quick": []}')
    with pytest.raises(ConfigError, match=r"^data\.augment\.0\.synonyms: .*bad\.json: 'quick': needs a non-empty list"):
        check_augment(DataConfig(train="x", augment=[{"op": "synonym", "synonyms": str(bad)}]), 0)
    with pytest.raises(ConfigError, match=r"^data\.augment\.1\.model: .* is not a local model directory"):
        check_augment(DataConfig(train="x", augment=[{"op": "word_swap"}, {"op": "paraphrase", "model": str(tmp_path)}]), 0)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SYNONYMS))
    check_augment(DataConfig(train="x", augment=[{"op": "synonym", "synonyms": str(good)}]), 0)


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ([{"op": "word_dropout", "rate": 1.5}], r"^data\.augment\.0\.rate: Input should be less than or equal to 1"),
        ([{"op": "word_swap", "p": -0.1}], r"^data\.augment\.0\.p: Input should be greater than or equal to 0"),
        ([{"op": "shuffle"}], r"^data\.augment\.0: .*'shuffle'.*expected tags: 'word_dropout', 'word_swap', 'synonym', 'paraphrase', 'template'"),
        ([{"op": "word_swap"}, {"op": "word_swap", "fields": ["answer"]}], r"^data\.augment\.1\.fields: 'answer' is not a role or column"),
        ([{"op": "synonym", "synonyms": {"two words": ["x"]}}], r"^data\.augment\.0\.synonyms: key 'two words' must be a single word"),
        ([{"op": "paraphrase", "model": "m", "copies": 2}], r"^data\.augment\.0\.copies: 2 > num_beams \(1\)"),
        ([{"op": "paraphrase", "model": "m", "prompt": "Say {txt}"}], r"^data\.augment\.0\.prompt: needs exactly the placeholder \{text\}"),
        ([{"op": "template", "record": {"instruction": "{a}"}, "slots": {"a": ["x"]}, "count": 1}], r"^data\.augment\.0\.record: misses the required column 'output'"),
        ([{"op": "template", "record": {"instruction": "{a}", "output": "{b}"}, "slots": {"a": ["x"]}, "count": 1}], r"^data\.augment\.0\.record\.output: placeholders without slots: \['b'\]"),
        ([{"op": "template", "record": {"instruction": "{a}", "output": "y"}, "slots": {"a": ["x", " "]}, "count": 1}], r"^data\.augment\.0\.record\.instruction: can come out empty"),
        ([{"op": "template", "record": {"instruction": "{a}", "output": "y"}, "slots": {"a": ["x"]}}], r"^data\.augment\.0\.count: required when combine is 'sample'"),
        ([{"op": "template", "record": {"instruction": "{a}", "output": "y"}, "slots": {"a": ["x"]}, "combine": "product", "count": 2}], r"^data\.augment\.0\.count: exceeds the 1 product combinations"),
        ([{"op": "word_swap", "copies": 200}, {"op": "word_dropout", "copies": 56}], r"^data\.augment: copies add up to 256 over the ops; at most 255"),
    ],
)
def test_augment_config_errors_name_the_key(tmp_path: Path, augment: list[dict], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tiny_experiment(tmp_path, data={"augment": augment}))


def test_fields_accept_roles_and_their_columns(tmp_path: Path) -> None:
    data = {"format": "qa", "fields": {"question": "q"}, "augment": [{"op": "word_swap", "fields": ["q", "context"]}]}
    config = config_from_dict(tiny_experiment(tmp_path, data=data))
    assert target_columns(config.data.augment[0].fields, config.data) == ["q", "context"]


def test_hiding_union_tags_keeps_fields_named_like_an_op(tmp_path: Path) -> None:
    """Regression: the op 'template' shares its name with data.template; errors there must keep the key."""
    with pytest.raises(ConfigError, match=r"^data\.template: not a valid format string"):
        config_from_dict(tiny_experiment(tmp_path), ["data.template={bad"])


def test_report_renders_augmentation_counts() -> None:
    counts = {"original": {"added": 10, "discarded": 0}, "word_swap": {"added": 20, "discarded": 0}, "paraphrase": {"added": 3, "discarded": 7}}
    markdown = render_markdown(DataReport(read=10, quarantined={}, max_length=64, splits={}, overlap_with_train={}, augmentation=counts))
    assert "## Augmentation (training split)" in markdown
    assert "| word_swap | 20 | 0 |" in markdown and "| paraphrase | 3 | 7 |" in markdown
    assert "Augmentation" not in render_markdown(DataReport(read=10, quarantined={}, max_length=64, splits={}, overlap_with_train={}))


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_augmentation_passes_the_driver_checks(path: Path) -> None:
    config = load_config(path)
    check_augment(config.data, config.data.split.seed)
