from __future__ import annotations

import math

from rayft.evaluate.metrics import exact_match, normalize_answer, perplexity
from rayft.tracking.summary import before_after_table


def test_normalisation_drops_case_punctuation_articles_and_spaces() -> None:
    assert normalize_answer("  The  Odd, number! ") == "odd number"


def test_exact_match_against_one_or_several_references() -> None:
    assert exact_match("Odd.", "odd")
    assert not exact_match("even", "odd")
    assert exact_match("Paris", ["London", "paris"])
    assert not exact_match("", "odd")


def test_perplexity_is_exp_of_loss_and_saturates() -> None:
    assert perplexity(math.log(7.0)) == 7.0 or abs(perplexity(math.log(7.0)) - 7.0) < 1e-9
    assert perplexity(1000.0) == math.inf


def test_before_after_table_lists_metrics_in_order() -> None:
    table = before_after_table({"eval_loss": 2.0, "exact_match": 0.0}, {"eval_loss": 0.5, "exact_match": 1.0})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "|", "before", "|", "after"]
    assert lines[2].split() == ["eval_loss", "|", "2.0000", "|", "0.5000"]
    assert lines[3].split() == ["exact_match", "|", "0.0000", "|", "1.0000"]
