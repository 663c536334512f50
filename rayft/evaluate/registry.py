"""The metric registry: one implementation per name in rayft.config.METRICS.

config.py knows the names (to validate eval.metrics before any work starts, without importing
scikit-learn and friends); this module knows how to compute them. A unit test keeps both in step.
Loss metrics (perplexity) come from the summed validation loss, not from here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from rayft.config import METRICS, BertScoreConfig
from rayft.evaluate import metrics as m
from rayft.evaluate.bertscore import BertScorer


@dataclass
class Answers:
    """Every answered example of one evaluation, from all ranks, in example order.

    predictions: generated text, or predicted labels (strings, or ids into the label set from a
    classification head); references: the valid answers of each example (one or more).
    """

    predictions: list[str | int]
    references: list[list[str]]


@dataclass
class MetricContext:
    labels: list[str] | None = None
    bertscore: BertScoreConfig | None = None
    _scorer: BertScorer | None = field(default=None, repr=False)

    def scorer(self) -> BertScorer:
        if self._scorer is None:
            assert self.bertscore is not None, "config validation requires eval.bertscore for bertscore"
            self._scorer = BertScorer(self.bertscore, torch.device("cuda") if torch.cuda.is_available() else None)
        return self._scorer


Compute = Callable[[Answers, MetricContext], dict[str, float]]


def _texts(answers: Answers, context: MetricContext) -> list[str]:
    """Predictions as text; label ids become their label names."""
    labels = context.labels or []
    return [labels[p] if isinstance(p, int) and 0 <= p < len(labels) else str(p) for p in answers.predictions]


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _classification(key: str) -> Compute:
    def compute(answers: Answers, context: MetricContext) -> dict[str, float]:
        if context.labels is None:
            raise ValueError(f"{key} needs the label set of the classification data")
        scores = m.classification_scores(answers.predictions, [refs[0] for refs in answers.references], context.labels)
        return {key: scores[key], "invalid_predictions": scores["invalid_predictions"], "unknown_references": scores["unknown_references"]}

    return compute


REGISTRY: dict[str, Compute] = {
    "exact_match": lambda a, c: {"exact_match": _mean([float(m.exact_match(p, r)) for p, r in zip(_texts(a, c), a.references)])},
    "f1": lambda a, c: {"f1": _mean([m.token_f1(p, r) for p, r in zip(_texts(a, c), a.references)])},
    "bleu": lambda a, c: {"bleu": m.bleu(_texts(a, c), a.references)},
    "chrf": lambda a, c: {"chrf": m.chrf(_texts(a, c), a.references)},
    "rouge": lambda a, c: m.rouge(_texts(a, c), a.references),
    "bertscore": lambda a, c: c.scorer().score(_texts(a, c), a.references),
    **{name: _classification(name) for name, spec in METRICS.items() if spec.kind == "classification"},
}
"""Answer-based metrics by name; 'perplexity' is the only loss metric and is not here."""


def compute_metrics(names: Sequence[str], answers: Answers, context: MetricContext) -> dict[str, float]:
    """The answer-based metrics among `names`, each once; nothing when no example was answered."""
    if not answers.predictions:
        return {}
    results: dict[str, float] = {}
    for name in names:
        if name in REGISTRY:
            results |= REGISTRY[name](answers, context)
    return results
