"""Augmentation on Ray Data: deterministic whatever the block layout, originals untouched, counts
exact, paraphrases equal to the model's own generate (tiny local models, nothing downloaded)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, ByT5Tokenizer, T5Config, T5ForConditionalGeneration

from rayft.config import DataConfig, TinyModelSpec
from rayft.data.augment import augment_train, augmentation_counts
from rayft.data.augment.noise import word_swap
from rayft.data.augment.rows import chosen, row_rng
from rayft.data.formats import validate_record
from rayft.models.loading import build_tiny_model
from tests.conftest import QUICKSTART_DATA

EOS = 1  # ByT5Tokenizer: pad 0, eos 1, 384 ids
SEED = 3


def _items(count: int) -> list[dict[str, Any]]:
    with QUICKSTART_DATA.open() as handle:
        records = [json.loads(next(handle)) for _ in range(count)]
    return [
        {"source": "quickstart.jsonl", "line": line, "entry": 0, "file_index": 0, "record": json.dumps(record), "copy": 0}
        for line, record in enumerate(records, start=1)
    ]


def _run(items: list[dict[str, Any]], data: DataConfig, blocks: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    out = augment_train(ray.data.from_items(items, override_num_blocks=blocks), data, SEED).materialize()
    rows = sorted(out.take_all(), key=lambda row: (row["file_index"], row["line"], row["copy"]))
    return rows, augmentation_counts(out, data, SEED)


def test_noise_and_template_rows_are_deterministic_marked_and_counted() -> None:
    items = _items(10)
    data = DataConfig(train="x", augment=[
        {"op": "word_swap", "copies": 2},  # every instruction has distinct words: each swap changes it
        {"op": "synonym", "p": 0.5, "synonyms": {"first": ["initial"], "number": ["integer"]}},
        {"op": "word_dropout", "rate": 0.3},
        {"op": "template", "combine": "zip", "slots": {"word": ["cab", "dig"], "last": ["b", "g"]},
         "record": {"instruction": "What is the last letter?", "input": "{word}", "output": "{last}"}},
    ])
    rows, counts = _run(items, data, blocks=1)
    rows_4, counts_4 = _run(items, data, blocks=4)
    assert rows == rows_4 and counts == counts_4, "the block layout must not change the augmented rows"

    originals = [row for row in rows if row["augmented"] == ""]
    assert originals == [{**item, "augmented": ""} for item in items], "original rows come out unchanged"
    chosen_lines = [item["line"] for item in items if chosen(SEED, 1, 0, item["line"], 0.5)]
    assert 0 < len(chosen_lines) < 10
    assert counts == {
        "original": {"added": 10, "discarded": 0},
        "word_swap": {"added": 20, "discarded": 0},
        "synonym": {"added": len(chosen_lines), "discarded": 0},  # every instruction holds a listed word
        "word_dropout": {"added": counts["word_dropout"]["added"], "discarded": 10 - counts["word_dropout"]["added"]},
        "template": {"added": 2, "discarded": 0},
    }
    by_op: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_op.setdefault(row["augmented"], []).append(row)
    assert {op: len(found) for op, found in by_op.items()} == {op: c["added"] for op, c in counts.items() if op != "original"} | {"": 10}
    assert {row["copy"] for row in by_op["word_swap"]} == {1, 2} and {row["copy"] for row in by_op["synonym"]} == {3}
    assert {row["copy"] for row in by_op["word_dropout"]} == {4}
    assert [row["line"] for row in by_op["synonym"]] == chosen_lines
    assert len({(row["file_index"], row["line"], row["copy"]) for row in rows}) == len(rows), "the order key is unique"

    first = json.loads(items[0]["record"])
    swapped = json.loads(by_op["word_swap"][0]["record"])
    assert swapped == {**first, "instruction": word_swap(first["instruction"], row_rng(SEED, 0, 0, 1, 1), swaps=1)}
    for row in rows:
        record = json.loads(row["record"])
        assert validate_record(record, data) is None
        if row["augmented"] not in {"", "template"}:
            source = json.loads(items[row["line"] - 1]["record"])
            assert record["output"] == source["output"] and record["input"] == source["input"], "answers are never noised"
            assert record != source, "an unchanged copy is discarded, not emitted"
    assert [(row["source"], row["file_index"], row["line"], json.loads(row["record"])["input"]) for row in by_op["template"]] == [
        ("synthetic:3", -4, 1, "cab"), ("synthetic:3", -4, 2, "dig"),
    ]


def _save(model: torch.nn.Module, path: Path, suppress: list[int]) -> str:
    """Save a tiny model with the byte tokenizer; `suppress` keeps generate from emitting those ids."""
    model.generation_config.suppress_tokens = suppress
    model.save_pretrained(path)
    ByT5Tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("generators")
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS,
    ))
    causal = build_tiny_model(TinyModelSpec(arch="llama", layers=2, hidden=32, heads=4, max_position=256), ByT5Tokenizer())
    letters = {3 + byte for byte in b"abcdefghijklmnopqrstuvwxyz"}  # ByT5 ids of these bytes
    return {
        # Random weights: left alone they mostly emit EOS, sentinels or invalid UTF-8 (decoded to "").
        # Allowing only letters (and never EOS) makes every rewrite max_new_tokens letters long.
        "seq2seq": _save(t5, root / "t5", [i for i in range(384) if i not in letters]),
        "causal": _save(causal, root / "llama", [i for i in range(384) if i not in letters]),
        "silent": _save(t5, root / "silent", [i for i in range(384) if i != EOS]),  # only EOS: always empty
    }


@functools.cache
def _load(path: str) -> tuple[Any, Any, bool]:
    seq2seq = AutoConfig.from_pretrained(path).is_encoder_decoder
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path), seq2seq


def _direct(path: str, prompt: str, beams: int, returns: int, max_new_tokens: int) -> list[str]:
    """What calling the model's generate on this one input gives (no batching, no padding)."""
    model, tokenizer, seq2seq = _load(path)
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, num_beams=beams, num_return_sequences=returns, do_sample=False)
    if not seq2seq:
        output = output[:, encoded["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


def test_paraphrase_equals_direct_generate_and_empty_generations_are_discarded(tiny_generators: dict[str, str]) -> None:
    items = _items(6)
    actor = {"batch_size": 4, "num_cpus": 0.5, "max_new_tokens": 5}
    data = DataConfig(train="x", augment=[
        {"op": "paraphrase", "model": tiny_generators["seq2seq"], "prompt": "Paraphrase: {text}", "num_beams": 2, "copies": 2, **actor},
        {"op": "paraphrase", "model": tiny_generators["causal"], "prompt": "{text} In other words:",
         "back_model": tiny_generators["seq2seq"], "fields": ["input"], "p": 0.5, **actor},
        {"op": "paraphrase", "model": tiny_generators["silent"], **actor},
    ])
    rows, counts = _run(items, data, blocks=3)

    expected: list[tuple[int, int, str, dict[str, Any]]] = []
    for item in items:
        source = json.loads(item["record"])
        rewrites = {field: _direct(tiny_generators["seq2seq"], f"Paraphrase: {source[field]}", 2, 2, 5) for field in ("instruction", "input")}
        for number in (1, 2):
            record = {**source, **{field: texts[number - 1] for field, texts in rewrites.items() if texts[number - 1]}}
            if record != source:
                expected.append((item["line"], number, "paraphrase.0", record))
        if chosen(SEED, 1, 0, item["line"], 0.5):
            middle = _direct(tiny_generators["causal"], f"{source['input']} In other words:", 1, 1, 5)[0]
            back = _direct(tiny_generators["seq2seq"], middle, 1, 1, 5)[0] if middle else ""
            if back and back != source["input"]:
                expected.append((item["line"], 3, "paraphrase.1", {**source, "input": back}))
    made = [(row["line"], row["copy"], row["augmented"], json.loads(row["record"])) for row in rows if row["augmented"]]
    assert made == sorted(expected, key=lambda e: (e[0], e[1]))
    assert len(made) >= 8 and any(e[2] == "paraphrase.1" for e in made), "rows to compare (else the test proves nothing)"
    assert [row for row in rows if not row["augmented"]] == [{**item, "augmented": ""} for item in items]

    attempted_back = sum(chosen(SEED, 1, 0, item["line"], 0.5) for item in items)
    added = {label: sum(1 for e in expected if e[2] == label) for label in ("paraphrase.0", "paraphrase.1")}
    assert counts == {
        "original": {"added": 6, "discarded": 0},
        "paraphrase.0": {"added": added["paraphrase.0"], "discarded": 12 - added["paraphrase.0"]},
        "paraphrase.1": {"added": added["paraphrase.1"], "discarded": attempted_back - added["paraphrase.1"]},
        "paraphrase.2": {"added": 0, "discarded": 6},  # every generation empty: no row, all counted
    }
