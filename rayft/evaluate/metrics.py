"""Task metrics.

Exact match uses the SQuAD answer normalisation (lower case, no punctuation, no articles,
single spaces). It is written here because the maintained implementations (`evaluate`) fetch
their code from a hub at run time, which this project must never do.
"""

from __future__ import annotations

import math
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: str | list[str]) -> bool:
    """True when the prediction equals any reference after normalisation."""
    options = [references] if isinstance(references, str) else references
    return any(normalize_answer(prediction) == normalize_answer(ref) for ref in options)


def perplexity(mean_loss: float) -> float:
    """exp(loss), saturating to inf instead of raising on overflow."""
    return math.exp(mean_loss) if mean_loss < 700 else math.inf
