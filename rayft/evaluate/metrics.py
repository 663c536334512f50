"""Task metrics over predictions and references: pure functions, no model, no Ray.

Library-backed where a maintained library computes the metric without fetching anything at run
time: scikit-learn (classification), sacrebleu (BLEU, chrF), rouge-score (ROUGE). Exact match and
token F1 follow the SQuAD v1.1 evaluation script; they are written here because the maintained
implementations (`evaluate`) download their code from a hub at run time, which rayft must never do.

Every generation metric takes, per example, a list of valid references (one or more): EM, F1 and
ROUGE take the best reference, BLEU and chrF use them all as a multi-reference corpus.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

# sacrebleu, rouge-score (with nltk) and scikit-learn (with scipy) are imported where they score:
# every Train worker imports this module, only rank 0 scores, and importing the three costs a
# worker ~3 s of start-up CPU.

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

INVALID_PREDICTION = "<invalid prediction>"
"""Stands for every prediction outside the label set: it never equals a reference."""
UNKNOWN_REFERENCE = "<unknown label>"
"""Stands for every reference outside the label set: no prediction can equal it."""


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _options(references: str | Sequence[str]) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def exact_match(prediction: str, references: str | Sequence[str]) -> bool:
    """True when the prediction equals any reference after normalisation."""
    return any(normalize_answer(prediction) == normalize_answer(ref) for ref in _options(references))


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    """SQuAD token F1 against the best reference; when either side normalises to nothing,
    1.0 if both do, else 0.0."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for reference in _options(references):
        expected = normalize_answer(reference).split()
        if not predicted or not expected:
            best = max(best, float(predicted == expected))
            continue
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def perplexity(mean_loss: float) -> float:
    """exp(loss), saturating to inf instead of raising on overflow."""
    return math.exp(mean_loss) if mean_loss < 700 else math.inf


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu wants one stream per reference slot; None marks a missing one (variable counts)."""
    width = max((len(refs) for refs in references), default=1)
    return [[refs[slot] if slot < len(refs) else None for refs in references] for slot in range(width)]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, 0-100), multi-reference."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), _reference_streams(references)).score)


def chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2, 0-100), multi-reference."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), _reference_streams(references)).score)


@lru_cache(maxsize=1)
def _rouge() -> RougeScorer:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean F-measure per ROUGE type over examples, each against its best reference (rouge-score's
    score_multi). rougeLsum treats newlines as sentence boundaries: put one sentence per line."""
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        scores = _rouge().score_multi(list(refs), prediction)
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    count = max(len(predictions), 1)
    return {kind: total / count for kind, total in totals.items()}


@dataclass(frozen=True)
class LabelOutcome:
    """Predictions and references mapped onto the label set (outsiders onto the sentinels)."""

    predictions: list[str]
    references: list[str]
    invalid_predictions: int
    unknown_references: int


def map_to_label_set(
    predictions: Sequence[str | int], references: Sequence[str | int], labels: Sequence[str]
) -> LabelOutcome:
    """Predictions may be label ids (a classification head) or label strings (generation);
    anything outside the label set counts as wrong and is counted, never raised on."""
    known = set(labels)

    def name(value: str | int) -> str:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return labels[value] if 0 <= value < len(labels) else f"<id {value}>"
        return str(value).strip()

    mapped_predictions = [name(p) for p in predictions]
    mapped_references = [name(r) for r in references]
    return LabelOutcome(
        predictions=[p if p in known else INVALID_PREDICTION for p in mapped_predictions],
        references=[r if r in known else UNKNOWN_REFERENCE for r in mapped_references],
        invalid_predictions=sum(p not in known for p in mapped_predictions),
        unknown_references=sum(r not in known for r in mapped_references),
    )


def classification_scores(
    predictions: Sequence[str | int], references: Sequence[str | int], labels: Sequence[str]
) -> dict[str, float]:
    """accuracy, f1/precision/recall (macro and micro over the label set), and the counts of
    predictions and references outside the label set (scored as wrong)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    outcome = map_to_label_set(predictions, references, labels)
    scores: dict[str, float] = {
        "accuracy": float(accuracy_score(outcome.references, outcome.predictions)) if outcome.references else 0.0,
        "invalid_predictions": float(outcome.invalid_predictions),
        "unknown_references": float(outcome.unknown_references),
    }
    for average in ("macro", "micro"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            outcome.references, outcome.predictions, labels=list(labels), average=average, zero_division=0.0
        )
        scores |= {f"precision_{average}": float(precision), f"recall_{average}": float(recall), f"f1_{average}": float(f1)}
    return scores


def label_confusion(
    predictions: Sequence[str | int], references: Sequence[str | int], labels: Sequence[str]
) -> tuple[list[str], list[list[int]]]:
    """Confusion matrix (rows: reference, columns: prediction) over the label set, plus the
    sentinel rows/columns for values outside it when there are any."""
    from sklearn.metrics import confusion_matrix

    outcome = map_to_label_set(predictions, references, labels)
    names = list(labels)
    if outcome.unknown_references:
        names.append(UNKNOWN_REFERENCE)
    if outcome.invalid_predictions:
        names.append(INVALID_PREDICTION)
    matrix = confusion_matrix(outcome.references, outcome.predictions, labels=names)
    return names, matrix.tolist()
