"""The readable end-of-run summary: metrics before and after fine-tuning (and on the test split)."""

from __future__ import annotations

import math
from typing import Any

from rayft.config import GENERAL_KEYS, METRICS

SHOWN = ("eval_loss", *(key for spec in METRICS.values() for key in spec.keys), *GENERAL_KEYS)
"""Every metric an evaluation can report, in the order tables show them."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def before_after_table(before: dict[str, Any], after: dict[str, Any], test: dict[str, Any] | None = None) -> str:
    """One row per metric present; a test column when the best checkpoint was scored on the test split."""
    names = [name for name in SHOWN if name in before or name in after]
    header = ("metric", "before", "after", *(("test",) if test is not None else ()))
    rows = [header] + [
        (n, _fmt(before.get(n)), _fmt(after.get(n)), *((_fmt(test.get(n)),) if test is not None else ())) for n in names
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
