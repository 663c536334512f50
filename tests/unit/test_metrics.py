"""Each metric against values computed by hand on small fixed inputs, and the bad inputs:
empty predictions, several valid references, labels outside the label set, unknown names."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rayft.config import METRICS, ConfigError, config_from_dict
from rayft.evaluate import metrics as m
from rayft.evaluate.registry import REGISTRY, Answers, MetricContext, compute_metrics
from rayft.tracking.summary import before_after_table
from tests.conftest import tiny_experiment


def test_normalisation_drops_case_punctuation_articles_and_spaces() -> None:
    assert m.normalize_answer("  The  Odd, number! ") == "odd number"


def test_exact_match_against_one_or_several_references() -> None:
    assert m.exact_match("Odd.", "odd")
    assert not m.exact_match("even", "odd")
    assert m.exact_match("Paris", ["London", "paris"])
    assert not m.exact_match("", "odd")


def test_token_f1_takes_the_best_reference() -> None:
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8
    assert m.token_f1("the cat sat", ["dog", "a cat sat down"]) == pytest.approx(0.8)
    assert m.token_f1("cat", "dog") == 0.0
    assert m.token_f1("Cat  sat!", "the cat sat") == 1.0


def test_empty_predictions_score_zero_unless_the_reference_is_empty_too() -> None:
    assert m.token_f1("", "odd") == 0.0
    assert m.token_f1("", "the") == 1.0  # both normalise to nothing (SQuAD's rule)
    assert m.bleu([""], [["the cat"]]) == 0.0
    assert m.rouge([""], [["the cat"]]) == dict.fromkeys(m.ROUGE_TYPES, 0.0)


def test_perplexity_is_exp_of_loss_and_saturates() -> None:
    assert m.perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert m.perplexity(1000.0) == math.inf


def test_bleu_by_hand() -> None:
    # hyp "the cat sat on the mat", ref "the cat sat on a mat": clipped n-gram precisions
    # 5/6, 3/5, 2/4, 1/3; equal lengths (no brevity penalty): BLEU = (1/12) ** (1/4)
    assert m.bleu(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(100 * (1 / 12) ** 0.25)


def test_bleu_uses_every_reference_and_allows_different_counts() -> None:
    hyps = ["the cat sat on the mat", "a b c d"]
    refs = [["the cat sat on a mat", "the cat sat on the mat"], ["a b c d"]]  # 2 references, then 1
    assert m.bleu(hyps, refs) == pytest.approx(100.0)


def test_chrf_by_hand() -> None:
    # "abcdefg" vs "abcdefh": order-n character n-grams match (7-n) of (8-n) on both sides,
    # so precision = recall = (7-n)/(8-n) for n = 1..6, and chrF is their mean.
    expected = 100 * sum((7 - n) / (8 - n) for n in range(1, 7)) / 6
    assert m.chrf(["abcdefg"], [["abcdefh"]]) == pytest.approx(expected)
    assert m.chrf(["abcdefg"], [["xyz", "abcdefg"]]) == pytest.approx(100.0)


def test_rouge_by_hand() -> None:
    # unigrams: 5 of 6 shared; bigrams: the-cat, on-the, the-mat of 5; LCS "the cat on the mat" = 5
    scores = m.rouge(["the cat sat on the mat"], [["the cat lay on the mat"]])
    assert scores == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6, "rougeLsum": 5 / 6})


def test_rouge_lsum_matches_sentences_split_at_newlines() -> None:
    # the same two sentences in the other order: rougeL's single LCS finds 3 of 6 tokens,
    # rougeLsum matches each reference sentence with its sentence: 6 of 6
    scores = m.rouge(["on the mat\nthe cat sat"], [["the cat sat\non the mat"]])
    assert scores == pytest.approx({"rouge1": 1.0, "rouge2": 4 / 5, "rougeL": 0.5, "rougeLsum": 1.0})


def test_rouge_takes_the_best_reference_and_averages_examples() -> None:
    scores = m.rouge(["the cat", "dog"], [["a bird", "the cat"], ["cat"]])
    assert scores["rouge1"] == pytest.approx((1.0 + 0.0) / 2)


def test_classification_by_hand() -> None:
    # per label: a P=1/2 R=1/2 F=1/2; b P=2/3 R=1 F=4/5; c P=0 R=0 F=0; 3 of 5 right
    scores = m.classification_scores(["a", "b", "b", "b", "a"], ["a", "a", "b", "b", "c"], ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert scores["recall_macro"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert scores["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)
    assert scores["f1_micro"] == pytest.approx(0.6)
    # every value is a label: micro P = micro R = micro F1 = accuracy (3 right of 5 predicted, of 5 references)
    assert (scores["precision_micro"], scores["recall_micro"]) == (pytest.approx(0.6), pytest.approx(0.6))
    assert (scores["invalid_predictions"], scores["unknown_references"]) == (0, 0)
    names, matrix = m.label_confusion(["a", "b", "b", "b", "a"], ["a", "a", "b", "b", "c"], ["a", "b", "c"])
    assert names == ["a", "b", "c"] and matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_label_ids_and_label_strings_score_alike() -> None:
    labels = ["neg", "pos"]
    assert m.classification_scores([1, 0, 1], ["pos", "pos", "neg"], labels) == m.classification_scores(
        ["pos", "neg", "pos"], ["pos", "pos", "neg"], labels
    )


def test_labels_outside_the_label_set_count_as_wrong_and_are_reported() -> None:
    # prediction "zzz" and id 7 are not labels; reference "maybe" is not a label
    scores = m.classification_scores(["a", "zzz", 7, "b"], ["a", "b", "b", "maybe"], ["a", "b"])
    assert scores["accuracy"] == pytest.approx(1 / 4)
    assert (scores["invalid_predictions"], scores["unknown_references"]) == (2, 1)
    # a: P=1 R=1; b: TP 0, FP 1 (the "maybe" row), FN 2: P=0 R=0
    assert scores["f1_macro"] == pytest.approx(0.5)
    assert scores["f1_micro"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))
    # micro precision: 1 right of the 2 predictions inside the label set ("a", "b"); micro recall:
    # 1 right of the 3 references inside it ("a", "b", "b"); neither is accuracy (1 of 4)
    assert (scores["precision_micro"], scores["recall_micro"]) == (pytest.approx(1 / 2), pytest.approx(1 / 3))
    names, matrix = m.label_confusion(["a", "zzz", 7, "b"], ["a", "b", "b", "maybe"], ["a", "b"])
    assert names == ["a", "b", m.UNKNOWN_REFERENCE, m.INVALID_PREDICTION]
    assert matrix == [[1, 0, 0, 0], [0, 0, 0, 2], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_registry_implements_exactly_the_configurable_names() -> None:
    assert set(REGISTRY) | {"perplexity"} == set(METRICS)
    answers = Answers(predictions=["pos", "neg"], references=[["pos"], ["pos", "neg"]])
    context = MetricContext(labels=["neg", "pos"])
    for name, compute in REGISTRY.items():
        if name == "bertscore":
            continue  # needs an encoder: tests/unit/test_bertscore.py
        assert set(METRICS[name].keys) <= set(compute(answers, context)), name


def test_micro_precision_and_recall_are_configurable_and_leave_accuracy_when_values_fall_outside() -> None:
    """Pins that precision_micro/recall_micro can be named in eval.metrics and report their own
    values (they were computed but unreachable, and are not accuracy under invalid predictions)."""
    assert {"precision_micro", "recall_micro"} <= set(METRICS) and METRICS["recall_micro"].kind == "classification"
    # right, invalid prediction "maybe", right, then two references outside the label set ("other")
    answers = Answers(
        predictions=["pos", "maybe", "neg", "pos", "neg"], references=[["pos"], ["neg"], ["neg"], ["other"], ["other"]]
    )
    scores = compute_metrics(["accuracy", "precision_micro", "recall_micro"], answers, MetricContext(labels=["neg", "pos"]))
    # 2 right of 5 examples, of the 4 predictions inside the label set, of the 3 references inside it
    assert scores == {
        "accuracy": pytest.approx(2 / 5), "precision_micro": pytest.approx(2 / 4), "recall_micro": pytest.approx(2 / 3),
        "invalid_predictions": 1.0, "unknown_references": 2.0,
    }


def test_compute_metrics_scores_each_name_once_and_nothing_without_answers() -> None:
    answers = Answers(predictions=["Paris", "the cat"], references=[["London", "paris"], ["a dog"]])
    scores = compute_metrics(["perplexity", "exact_match", "f1"], answers, MetricContext())
    assert scores == {"exact_match": 0.5, "f1": pytest.approx(0.5)}
    assert compute_metrics(["exact_match"], Answers([], []), MetricContext()) == {}


def test_unknown_metric_is_a_config_error_listing_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(tiny_experiment(tmp_path), ["eval.metrics=[rouge, blue]"])
    message = str(caught.value)
    assert message.startswith("eval.metrics: unknown metric 'blue'; valid metrics: perplexity, exact_match")
    assert all(name in message for name in METRICS)


def test_before_after_table_lists_metrics_in_order() -> None:
    table = before_after_table({"eval_loss": 2.0, "exact_match": 0.0}, {"eval_loss": 0.5, "exact_match": 1.0})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "|", "before", "|", "after"]
    assert lines[2].split() == ["eval_loss", "|", "2.0000", "|", "0.5000"]
    assert lines[3].split() == ["exact_match", "|", "0.0000", "|", "1.0000"]


def test_before_after_table_adds_a_test_column() -> None:
    table = before_after_table({"eval_loss": 2.0}, {"eval_loss": 0.5, "general_eval_loss": 3.0}, {"eval_loss": 0.25})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "|", "before", "|", "after", "|", "test"]
    assert lines[2].split() == ["eval_loss", "|", "2.0000", "|", "0.5000", "|", "0.2500"]
    assert lines[3].split() == ["general_eval_loss", "|", "-", "|", "3.0000", "|", "-"]
