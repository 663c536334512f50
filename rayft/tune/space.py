"""Search spaces from the experiment file, as Ray Tune and Optuna want them.

A dimension is one of uniform / loguniform / int / choice / grid over a dotted config key,
optionally conditional (`when: {method.type: lora}`). Optuna samples define-by-run, which is
what makes conditional dimensions possible; random and grid search use Tune's own generator.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from rayft.config import ConfigError, SearchDimension, TuneSection


def _kind(dimension: SearchDimension) -> tuple[str, Any]:
    for kind in ("uniform", "loguniform", "int_range", "choice", "grid"):
        value = getattr(dimension, kind)
        if value is not None:
            return kind, value
    raise AssertionError("SearchDimension validates that one kind is set")


def applies(dimension: SearchDimension, sampled: dict[str, Any], base: dict[str, Any]) -> bool:
    """A conditional dimension applies when every `when` key equals its value, looked up in the
    values sampled so far, then in the base config."""
    return all(sampled.get(key, lookup(base, key)) == value for key, value in (dimension.when or {}).items())


def lookup(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class OptunaSpace:
    """A define-by-run space for OptunaSearch: unconditional keys first, then the ones whose
    condition holds; inapplicable keys are never suggested (Optuna's conditional spaces).
    A class, not a closure: Tune pickles the searcher into the sweep's checkpoint."""

    def __init__(self, section: TuneSection, base: dict[str, Any]) -> None:
        self.ordered = sorted(section.space.items(), key=lambda item: item[1].when is not None)
        self.base = base

    def __call__(self, trial: Any) -> None:
        sampled: dict[str, Any] = {}
        for key, dimension in self.ordered:
            if not applies(dimension, sampled, self.base):
                continue
            kind, value = _kind(dimension)
            if kind == "uniform":
                sampled[key] = trial.suggest_float(key, value[0], value[1])
            elif kind == "loguniform":
                sampled[key] = trial.suggest_float(key, value[0], value[1], log=True)
            elif kind == "int_range":
                sampled[key] = trial.suggest_int(key, value[0], value[1])
            else:
                sampled[key] = trial.suggest_categorical(key, value)


def tune_space(section: TuneSection, base: dict[str, Any]) -> dict[str, Any]:
    """Tune's param_space for random and grid search. Conditional dimensions are sampled by a
    function of the already-sampled config, returning None where the condition fails."""
    space: dict[str, Any] = {}
    # Conditional keys last: Tune resolves a sample_from after the plain domains listed before it,
    # so a condition then reads the value sampled for its key, whatever the order in the YAML.
    for key, dimension in sorted(section.space.items(), key=lambda item: item[1].when is not None):
        kind, value = _kind(dimension)
        if section.search == "grid" and kind not in {"grid", "choice"}:
            raise ConfigError(f"tune.space.{key}: grid search needs grid or choice values, got {kind}")
        domain = {
            "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v),
            "int_range": lambda v: tune.randint(v[0], v[1] + 1),
            "choice": lambda v: tune.grid_search(v) if section.search == "grid" else tune.choice(v),
            "grid": tune.grid_search,
        }[kind](value)
        if dimension.when is not None:
            if kind == "grid" or section.search == "grid":
                raise ConfigError(f"tune.space.{key}: a conditional dimension cannot be a grid")
            domain = _conditional(key, dimension, domain, base)
        space[key] = domain
    return space


def _conditional(key: str, dimension: SearchDimension, domain: Any, base: dict[str, Any]) -> Any:
    def sample(spec: Any) -> Any:
        sampled = dict(spec.config)
        return domain.sample() if applies(dimension, sampled, base) else None

    return tune.sample_from(sample)
