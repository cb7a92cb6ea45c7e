"""One scorer contract: every metric states what it needs, and judged metrics are built with their judge."""

from __future__ import annotations

from typing import Any

import pytest

from agility_mlflow.errors import AgilityError
from agility_mlflow.scoring import JudgedScore, JudgeInput, get_metric, judge_rows


class _Judge:
    """Just enough of a judge for llm_judge: a config and a structured reply."""

    class config:  # noqa: N801 - stands in for the judge's config section
        criteria = None

    style_guide = None
    backend = None

    def structured(self, messages: Any, schema: Any, validate: Any) -> tuple[float, str]:
        return 7.0, "close enough"


@pytest.mark.parametrize(("name", "needs"), [
    ("exact_match", (True, False, False)),
    ("answer_length", (False, False, False)),
    ("llm_judge", (False, False, True)),
    ("faithfulness", (False, True, True)),
    ("answer_correctness", (True, False, True)),
    ("deepeval_hallucination", (False, True, True)),
])
def test_every_metric_states_what_it_needs(name: str, needs: tuple[bool, bool, bool]) -> None:
    metric = get_metric(name)
    assert (metric.needs_reference, metric.needs_context, metric.needs_judge) == needs


def test_a_judged_metric_scores_with_the_judge_it_was_built_with() -> None:
    judge = _Judge()
    metric = get_metric("llm_judge", judge=judge)  # type: ignore[arg-type]
    assert metric.judge is judge
    assert metric.score(JudgeInput("Revenue?", "$1,577M", ["$1577.00 million"])) == JudgedScore(7.0, "close enough")


def test_a_string_metric_scores_through_the_same_call() -> None:
    assert get_metric("exact_match").score(JudgeInput("Q?", "The answer is 42.", ["the answer is 42"])).value == 1.0


def test_a_judged_metric_built_without_a_judge_is_refused_before_any_sample_is_scored() -> None:
    rows: list[dict[str, Any]] = [{"sample_id": "a"}]
    with pytest.raises(AgilityError, match="llm_judge.*built without a judge"):
        judge_rows(rows, [JudgeInput("Q?", "A")], [get_metric("llm_judge")])
    assert rows == [{"sample_id": "a"}]
