"""The readable end-of-run summary: metrics before and after fine-tuning."""

from __future__ import annotations

import math
from typing import Any

SHOWN = ("eval_loss", "perplexity", "exact_match", "accuracy", "f1_macro")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    names = [name for name in SHOWN if name in before or name in after]
    rows = [("metric", "before", "after")] + [(n, _fmt(before.get(n)), _fmt(after.get(n))) for n in names]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
