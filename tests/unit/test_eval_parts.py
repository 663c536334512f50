"""Evaluation parts without Ray: generation, label scoring, one-process evaluate_split, reports,
several valid answers in the data, and the eval config checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ByT5Tokenizer

from rayft.config import DEFAULT_METRICS, ConfigError, DataConfig, TinyModelSpec, config_from_dict
from rayft.data.batching import collate
from rayft.data.formats import format_record, validate_record
from rayft.evaluate.classify import label_continuations, label_log_likelihoods, predict_labels
from rayft.evaluate.generation import generate_answers
from rayft.evaluate.registry import Answers, MetricContext, compute_metrics
from rayft.evaluate.validation import EvalTask, evaluate_split
from rayft.models.loading import build_tiny_model
from rayft.tracking.eval_report import EvalReport, write_eval_report
from tests.conftest import examples_from_records, tiny_experiment


@pytest.fixture(scope="module")
def tokenizer() -> ByT5Tokenizer:
    return ByT5Tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: ByT5Tokenizer) -> nn.Module:
    return build_tiny_model(TinyModelSpec(hidden=32, heads=4), tokenizer).eval()


def _always(model: nn.Module, token: int) -> nn.Module:
    """A copy whose output layer always prefers `token` (zero weights, one-hot bias)."""
    copy = build_tiny_model(TinyModelSpec(hidden=32, heads=4), ByT5Tokenizer()).eval()
    copy.load_state_dict(model.state_dict())
    head = nn.Linear(copy.lm_head.in_features, copy.lm_head.out_features, bias=True)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[token] = 10.0
    copy.lm_head = head
    return copy


def _ids(tokenizer: ByT5Tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _greedy_by_hand(model: nn.Module, prompt: list[int], steps: int, eos: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        next_id = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if next_id == eos:
            break
        ids.append(next_id)
    return ids[len(prompt) :]


def test_batched_greedy_generation_strips_the_prompt_and_matches_decoding_by_hand(model, tokenizer) -> None:
    prompts = [_ids(tokenizer, text) for text in ["Question: 2+2?\nAnswer:", "Hi", "A longer prompt here:"]]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=5, batch_size=3)
    expected = [tokenizer.decode(_greedy_by_hand(model, p, 5, tokenizer.eos_token_id), skip_special_tokens=True).strip() for p in prompts]
    assert answers == expected
    assert generate_answers(model, tokenizer, prompts, 5, batch_size=1) == answers  # left padding changes nothing


def test_generation_stops_at_eos_or_after_max_new_tokens(model, tokenizer) -> None:
    prompts = [_ids(tokenizer, "abc"), _ids(tokenizer, "a much longer prompt")]
    assert generate_answers(_always(model, tokenizer.eos_token_id), tokenizer, prompts, 6, 2) == ["", ""]
    letter_x = _ids(tokenizer, "x")[0]
    assert generate_answers(_always(model, letter_x), tokenizer, prompts, 6, 2) == ["xxxxxx", "xxxxxx"]


def test_beam_search_decodes_per_prompt_alike_in_batches(model, tokenizer) -> None:
    prompts = [_ids(tokenizer, "Question: 2+2?\nAnswer:"), _ids(tokenizer, "Hi")]
    batched = generate_answers(model, tokenizer, prompts, 4, batch_size=2, num_beams=3)
    assert batched == [generate_answers(model, tokenizer, [p], 4, batch_size=1, num_beams=3)[0] for p in prompts]
    assert all(len(answer) <= 4 for answer in batched)


def test_label_scores_are_summed_log_probabilities_of_label_and_eos(model, tokenizer) -> None:
    prompts = [_ids(tokenizer, "Text: good film\nLabel:"), _ids(tokenizer, "Text: bad\nLabel:")]
    continuations = label_continuations(tokenizer, ["neg", "pos"], " ")
    assert continuations[1] == _ids(tokenizer, " pos") + [tokenizer.eos_token_id]
    scores = label_log_likelihoods(model, prompts, continuations, tokenizer.pad_token_id, batch_size=2)
    for e, prompt in enumerate(prompts):
        for l, continuation in enumerate(continuations):
            log_probs = F.log_softmax(model(input_ids=torch.tensor([prompt + continuation])).logits[0].double(), dim=-1)
            by_hand = sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(continuation))
            assert scores[e, l].item() == pytest.approx(by_hand, abs=1e-4)


def test_label_prediction_never_leaves_the_label_set(model, tokenizer) -> None:
    prompts = [_ids(tokenizer, "Text: anything\nLabel:")] * 3
    p = _ids(tokenizer, "p")[0]
    assert predict_labels(_always(model, p), tokenizer, prompts, ["neg", "pos"], " ", 2) == ["pos"] * 3
    n = _ids(tokenizer, "n")[0]
    assert predict_labels(_always(model, n), tokenizer, prompts, ["neg", "pos"], " ", 2) == ["neg"] * 3




def test_evaluate_split_in_one_process_gives_token_weighted_loss_and_label_metrics(model, tokenizer, tmp_path: Path) -> None:
    config = config_from_dict(tiny_experiment(tmp_path, data={"format": "classification"}))
    records = [{"text": "good film", "label": "pos"}, {"text": "bad", "label": "neg"}, {"text": "meh", "label": "mixed"}]
    examples = examples_from_records(tokenizer, config.data, records)
    task = EvalTask.from_config(config, labels=["neg", "pos"])
    outcome = evaluate_split(_always(model, _ids(tokenizer, "p")[0]), tokenizer, examples, task, batch_size=2, rank=0, world_size=1)
    assert outcome.answers is not None and outcome.answers.predictions == ["pos", "pos", "pos"]
    metrics = outcome.metrics
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert (metrics["invalid_predictions"], metrics["unknown_references"], metrics["answered"]) == (0, 1, 3)
    assert set(metrics) >= {"eval_loss", "accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro"}

    plain = evaluate_split(model, tokenizer, examples, task, batch_size=2, rank=0, world_size=1, general=examples[:2])
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        token_mean = model(**batch).loss.item()  # transformers: mean over every trained token of the batch
    assert plain.metrics["eval_loss"] == pytest.approx(token_mean, rel=1e-5)
    assert plain.metrics["general_perplexity"] == pytest.approx(torch.tensor(plain.metrics["general_eval_loss"]).exp().item())


def test_several_valid_answers_are_read_and_the_first_trains(tokenizer, tmp_path: Path) -> None:
    data = DataConfig(train="x.jsonl", format="qa")
    record = {"question": "Capital of France?", "answer": ["Paris", "paris, France"]}
    assert validate_record(record, data) is None
    formatted = format_record(record, data, tokenizer)
    assert (formatted.reference, formatted.alternatives) == ("Paris", ("paris, France",))
    assert formatted.segments[-1] == (" Paris", True)
    example = examples_from_records(tokenizer, data, [record])[0]
    assert (example.reference, example.alternatives) == ("Paris", ("paris, France",))
    assert validate_record({"question": "q", "answer": []}, data) == "wrong_type: 'answer' must be a string or a non-empty list of non-empty strings"
    assert validate_record({"question": "q", "answer": ["ok", 3]}, data).startswith("wrong_type")
    assert validate_record({"text": "t", "label": ["a", "b"]}, DataConfig(train="x", format="classification")).startswith("wrong_type")


def test_multi_reference_examples_score_against_their_best_answer(model, tokenizer, tmp_path: Path) -> None:
    config = config_from_dict(tiny_experiment(tmp_path, data={"format": "qa"}, eval={"metrics": ["exact_match", "f1"]}))
    examples = examples_from_records(tokenizer, config.data, [{"question": "Say x", "answer": ["yyy", "xxxxxx"]}])
    outcome = evaluate_split(_always(model, _ids(tokenizer, "x")[0]), tokenizer, examples, EvalTask.from_config(config), 1, 0, 1)
    assert outcome.answers.references == [["yyy", "xxxxxx"]]
    assert (outcome.metrics["exact_match"], outcome.metrics["f1"]) == (1.0, 1.0)


def test_eval_report_files(tmp_path: Path) -> None:
    report = EvalReport(
        "test", "runs/x/checkpoint_1", 3, {"eval_loss": 0.5, "accuracy": 2 / 3},
        confusion={"labels": ["neg", "pos"], "matrix": [[1, 0], [1, 1]]},
        samples=[{"prediction": "pos", "references": ["pos"]}, {"prediction": "", "references": ["a|b"]}],
    )
    written = write_eval_report(report, tmp_path, base=False)
    assert set(written.files) == {"json", "markdown", "confusion"}
    saved = json.loads((tmp_path / "eval_test.json").read_text())
    assert saved["metrics"] == {"eval_loss": 0.5, "accuracy": 2 / 3} and saved["confusion"]["matrix"] == [[1, 0], [1, 1]]
    markdown = (tmp_path / "eval_test.md").read_text()
    assert "| accuracy | 0.6667 |" in markdown and "| **pos** | 1 | 1 |" in markdown and "| (empty) | a\\|b |" in markdown
    assert (tmp_path / "eval_test_confusion.png").stat().st_size > 5_000
    write_eval_report(EvalReport("validation", "base", 3, {"eval_loss": 1.0}), tmp_path, base=True)
    assert {p.name for p in tmp_path.glob("eval_validation*")} == {"eval_validation_base.json", "eval_validation_base.md"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.metrics=[bertscore]"], "eval.bertscore: the bertscore metric needs eval.bertscore.model"),
        (["eval.metrics=[accuracy]"], "eval.metrics: 'accuracy' needs data.format classification (got 'instruction')"),
        (["data.format=text", "eval.metrics=[rouge]"], "eval.metrics: 'rouge' compares answers with references; data.format 'text' has none"),
        (["eval.metric_for_best=accuracy"], "eval.metric_for_best: 'accuracy' is not reported; choose one of eval_loss, perplexity"),
        (["eval.general=[]"], "eval.general.files: must name at least one file"),
        (["eval.generate.num_beams=0"], "eval.generate.num_beams: Input should be greater than or equal to 1"),
    ],
)
def test_bad_eval_config_names_the_key(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(tiny_experiment(tmp_path), overrides)
    assert str(caught.value).startswith(message)


ROUGE_KEYS = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
LABEL_METRICS = ["accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro"]


@pytest.mark.parametrize(
    ("task_format", "names", "keys"),
    [
        ("instruction", ["perplexity", "exact_match", "rouge"], ["eval_loss", "perplexity", "exact_match", *ROUGE_KEYS]),
        ("qa", ["perplexity", "exact_match", "f1"], ["eval_loss", "perplexity", "exact_match", "f1"]),
        ("classification", LABEL_METRICS, ["eval_loss", *LABEL_METRICS]),
        ("summarization", ["perplexity", "rouge"], ["eval_loss", "perplexity", *ROUGE_KEYS]),
        ("text", ["perplexity"], ["eval_loss", "perplexity"]),
        ("chat", ["perplexity", "rouge", "bleu"], ["eval_loss", "perplexity", *ROUGE_KEYS, "bleu"]),
    ],
)
def test_each_format_has_its_default_metrics_and_they_compute_every_reported_key(
    tmp_path: Path, task_format: str, names: list[str], keys: list[str]
) -> None:
    """Pins the default metrics of every data.format (as the README lists them), the keys they
    report, and that scoring answers with those defaults yields exactly those keys (nothing a
    metric_for_best could name goes missing at evaluation time)."""
    config = config_from_dict(tiny_experiment(tmp_path, data={"format": task_format}))
    assert (config.metric_names, config.eval_keys, config.eval.metric_for_best) == (names, keys, "eval_loss")
    answers = Answers(predictions=["pos", "neg"], references=[["pos"], ["pos"]])
    computed = compute_metrics(config.metric_names, answers, MetricContext(labels=["neg", "pos"]))
    counts = {"invalid_predictions", "unknown_references"} if task_format == "classification" else set()
    assert set(computed) == set(keys) - {"eval_loss", "perplexity"} | counts


def test_every_format_has_defaults() -> None:
    """Pins that a new data.format cannot ship without default metrics (metric_names would KeyError)."""
    formats = set(get_args(DataConfig.model_fields["format"].annotation))
    assert formats == set(DEFAULT_METRICS) == {"instruction", "qa", "classification", "summarization", "text", "chat"}


def test_general_adds_its_keys_and_metric_for_best_may_name_any_reported_key(tmp_path: Path) -> None:
    text = config_from_dict(tiny_experiment(tmp_path, data={"format": "text"}), ["eval.general=general.jsonl"])
    assert text.eval.general is not None and text.eval.general.files == "general.jsonl" and text.eval.general.format == "text"
    assert text.eval_keys == ["eval_loss", "perplexity", "general_eval_loss", "general_perplexity"]
    assert config_from_dict(tiny_experiment(tmp_path), ["eval.metric_for_best=rougeL", "eval.mode=max"]).eval.metric_for_best == "rougeL"
    assert EvalTask.from_config(text).context == MetricContext()


def test_tune_metric_must_be_reported(tmp_path: Path) -> None:
    raw = tiny_experiment(tmp_path) | {"tune": {"metric": "accuracy", "mode": "max", "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}}
    with pytest.raises(ConfigError, match="tune.metric: 'accuracy' is not reported; choose one of eval_loss"):
        config_from_dict(raw)
