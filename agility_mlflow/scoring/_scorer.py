"""The one contract every metric meets: what it needs to score a sample, and the call that scores it.

A string metric (``exact_match``) needs the answer and, for most, a reference; a judged metric
(``llm_judge``, Ragas, DeepEval) also needs a judge model, which it is built with
(``get_metric("llm_judge", judge=judge)``), as inspect_ai's ``model_graded_qa(model=...)`` is.
Callers read the needs (``needs_reference``, ``needs_context``, ``needs_judge``) instead of asking
which class a metric is.

Example:
    >>> from agility_mlflow.scoring import get_metric
    >>> m = get_metric("exact_match")
    >>> m.needs_reference, m.needs_context, m.needs_judge, m.score(JudgeInput("Q?", "42", ["42"])).value
    (True, False, False, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agility_mlflow.scoring._judge_model import Judge


@dataclass(frozen=True)
class JudgeInput:
    """What a metric sees of one answered sample.

    Attributes:
        question: The user's question (the ``question`` column, else the rendered user message).
        answer: The answer being scored.
        references: Ground-truth answers (may be empty: metrics that need none still run).
        contexts: Retrieved passages (the ``context`` column), for faithfulness and context metrics.
        sample: The whole dataset row.
    """

    question: str
    answer: str
    references: Sequence[str] = ()
    contexts: Sequence[str] = ()
    sample: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str | None:
        return self.references[0] if self.references else None


@dataclass(frozen=True)
class JudgedScore:
    """One sample's score (``None``: the metric does not apply) and, from a judge, its reason."""

    value: float | None
    reasoning: str | None = None


class Scorer(Protocol):
    """A named per-sample score and what it needs.

    Attributes:
        name: The MLflow metric name and the column in ``eval_results.json``.
        family: Where it comes from: ``string``, ``llm_judge``, ``ragas`` or ``deepeval`` (the latter two an extra to install).
        needs_reference: Samples without ``answer_ground_truth`` cannot be scored.
        needs_context: Samples without ``context`` cannot be scored.
        needs_judge: Scored by a judge model, after generation (:func:`~agility_mlflow.scoring.judge_rows`).
        judge: The judge it was built with (``None`` for a metric that needs none, or one built only to read its needs).
        higher_is_better: Direction for comparisons and sweeps.
    """

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def needs_reference(self) -> bool: ...

    @property
    def needs_context(self) -> bool: ...

    @property
    def needs_judge(self) -> bool: ...

    @property
    def judge(self) -> Judge | None: ...

    @property
    def higher_is_better(self) -> bool: ...

    def score(self, item: JudgeInput) -> JudgedScore:
        """Score one answered sample."""
        ...
