"""What a quality metric is, and the registry that maps config names to metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agility_mlflow.errors import InputError
from agility_mlflow.scoring._deepeval import DEEPEVAL_METRICS, GEVAL_PREFIX, deepeval_metric
from agility_mlflow.scoring._judged_metric import JudgedMetric
from agility_mlflow.scoring._scorer import JudgedScore, JudgeInput, Scorer
from agility_mlflow.vocabulary import lower_is_better

if TYPE_CHECKING:
    from agility_mlflow.scoring._judge_model import Judge

ScoreFn = Callable[[str, Sequence[str], Mapping[str, Any]], "float | None"]


@dataclass(frozen=True)
class Metric:
    """A named per-sample score computed from the answer alone (a :class:`Scorer` that needs no judge).

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

    family = "string"
    needs_context = False
    needs_judge = False
    judge = None

    def __call__(self, output: str, references: Sequence[str], sample: Mapping[str, Any]) -> float | None:
        return self.fn(output, references, sample)

    def score(self, item: JudgeInput) -> JudgedScore:
        """The score of one answered sample."""
        return JudgedScore(self.fn(item.answer, item.references, item.sample))


Factory = Callable[["Judge | None"], Scorer]
"""Builds a metric with its judge (ignored by metrics that need none)."""

_FACTORIES: dict[str, Factory] = {}


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
        def factory(judge: Judge | None = None) -> Scorer:
            return Metric(name, fn, needs_reference, higher_is_better)

        _FACTORIES[name] = factory
        return fn

    return register


def get_metric(name: str, judge: Judge | None = None) -> Scorer:
    """The metric registered as ``name``, built with ``judge`` if it needs one; an :class:`InputError` listing the known names otherwise.

    A judged metric built without a judge states its needs but cannot score (``prepare`` reads the
    needs before any judge exists).

    Example:
        >>> get_metric("llm_judge").family, get_metric("geval_conciseness").family
        ('llm_judge', 'deepeval')
    """
    _load_builtins()
    if name.startswith(GEVAL_PREFIX) and len(name) > len(GEVAL_PREFIX):
        return deepeval_metric(name, judge)
    if name not in _FACTORIES:
        known = ", ".join(sorted(_FACTORIES) + [f"{GEVAL_PREFIX}<name>"])
        raise InputError(f"unknown metric '{name}' (known: {known})")
    return _FACTORIES[name](judge)


def higher_is_better(name: str) -> bool:
    """The one direction rule: whether higher values of a metric or result column ``name`` are better.

    Cost, latency, time to first token, tokens and errors (the vocabulary's lower-is-better run
    metrics and result columns) are lower-is-better; a quality metric has its own direction. An
    unknown name is an :class:`InputError`.

    Example:
        >>> higher_is_better("token_f1"), higher_is_better("cost_usd_per_sample"), higher_is_better("latency_s")
        (True, False, False)
    """
    if lower_is_better(name):
        return False
    return get_metric(name).higher_is_better


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
    from agility_mlflow.scoring._ragas import RAGAS_METRICS, STRING_METRICS, ragas_metric

    _FACTORIES["llm_judge"] = lambda judge: JudgedMetric("llm_judge", "llm_judge", score_llm_judge, scale=(1.0, 10.0), judge=judge)
    for name in RAGAS_METRICS:
        _FACTORIES[name] = functools.partial(ragas_metric, name)
    for name in DEEPEVAL_METRICS:
        _FACTORIES[name] = functools.partial(deepeval_metric, name)
    for name in STRING_METRICS:
        _FACTORIES[name] = functools.partial(_string_metric, name)


def _string_metric(name: str, judge: Judge | None = None) -> Scorer:
    """One of Ragas's string metrics: scored without a judge."""
    from agility_mlflow.scoring._ragas import string_metric_score

    return Metric(name, string_metric_score(name))
