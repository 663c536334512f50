"""Loss curves saved as images in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curves(records: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Training loss, eval loss and (forgetting monitor) general eval loss against step; None when nothing was logged."""
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if isinstance(r.get("eval_loss"), (int, float))]
    general = [(r["step"], r["general_eval_loss"]) for r in records if isinstance(r.get("general_eval_loss"), (int, float))]
    if not train and not evals:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train), label="train loss")
    if evals:
        axis.plot(*zip(*evals), marker="o", label="eval loss")
    if general:
        axis.plot(*zip(*general), marker="s", linestyle="--", label="general eval loss (forgetting)")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
