"""What a quality metric is, and the registry that maps config names to metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agility_mlflow.errors import InputError
from agility_mlflow.scoring._deepeval import DEEPEVAL_METRICS, GEVAL_PREFIX, deepeval_metric
from agility_mlflow.scoring._judged import JudgedMetric

ScoreFn = Callable[[str, Sequence[str], Mapping[str, Any]], "float | None"]


@dataclass(frozen=True)
class Metric:
    """A named per-sample score.

    Calling it with ``(output, references, sample)`` returns a float, or ``None`` when the metric
    does not apply to that sample (e.g. ``numeric_match`` on a reference without numbers). ``None``
    samples are left out of the run's mean, never counted as 0.

    Attributes:
        name: The MLflow metric name and the column in ``eval_results.json``.
        fn: ``(output, references, sample) -> float | None``.
        needs_reference: The metric compares against ``answer_ground_truth``.
        higher_is_better: Direction for comparisons and sweeps.
    """

    name: str
    fn: ScoreFn
    needs_reference: bool = True
    higher_is_better: bool = True

    def __call__(self, output: str, references: Sequence[str], sample: Mapping[str, Any]) -> float | None:
        return self.fn(output, references, sample)


_FACTORIES: dict[str, Callable[[], Metric | JudgedMetric]] = {}


def metric(name: str, *, needs_reference: bool = True, higher_is_better: bool = True) -> Callable[[ScoreFn], ScoreFn]:
    """Register a per-sample scoring function under ``name``.

    Example:
        >>> @metric("shouts")
        ... def shouts(output, references, sample):
        ...     return float(output.isupper())
        >>> get_metric("shouts")("HI", [], {})
        1.0
    """

    def register(fn: ScoreFn) -> ScoreFn:
        _FACTORIES[name] = lambda: Metric(name, fn, needs_reference, higher_is_better)
        return fn

    return register


def get_metric(name: str) -> Metric | JudgedMetric:
    """The metric registered as ``name``; an :class:`InputError` listing the known names otherwise.

    Example:
        >>> get_metric("llm_judge").family, get_metric("geval_conciseness").family
        ('llm_judge', 'deepeval')
    """
    _load_builtins()
    if name.startswith(GEVAL_PREFIX) and len(name) > len(GEVAL_PREFIX):
        return deepeval_metric(name)
    if name not in _FACTORIES:
        known = ", ".join(sorted(_FACTORIES) + [f"{GEVAL_PREFIX}<name>"])
        raise InputError(f"unknown metric '{name}' (known: {known})")
    return _FACTORIES[name]()


def metric_names() -> list[str]:
    """Every registered metric name, sorted (GEval metrics are ``geval_<name>`` on top)."""
    _load_builtins()
    return sorted(_FACTORIES)


def _load_builtins() -> None:
    # Importing the modules runs their @metric decorators.
    from agility_mlflow.scoring import _length, _match, _overlap  # noqa: F401

    if "llm_judge" in _FACTORIES:
        return
    from agility_mlflow.scoring._llm_judge import score_llm_judge
    from agility_mlflow.scoring._ragas import RAGAS_METRICS, STRING_METRICS, ragas_metric, string_metric_score

    _FACTORIES["llm_judge"] = lambda: JudgedMetric("llm_judge", "llm_judge", score_llm_judge, scale=(1.0, 10.0))
    for name in RAGAS_METRICS:
        _FACTORIES[name] = functools.partial(ragas_metric, name)
    for name in DEEPEVAL_METRICS:
        _FACTORIES[name] = functools.partial(deepeval_metric, name)
    for name in STRING_METRICS:
        _FACTORIES[name] = functools.partial(Metric, name, string_metric_score(name))
