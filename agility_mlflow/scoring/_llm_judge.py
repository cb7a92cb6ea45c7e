"""``llm_judge``: a model as an impartial judge, a 1-10 score with its reasoning, as the AWS method uses.

With a reference answer the judge grades against it; without one it grades the answer on the
question (and context) alone. Criteria and an SME style guide come from the ``judge:`` section.

Example:
    >>> messages = judge_messages(JudgeInput("Revenue 2022?", "$1,577M", ["$1577.00"]), criteria=None, style_guide=None)
    >>> [m["role"] for m in messages], "$1577.00" in messages[1]["content"]
    (['system', 'user'], True)
    >>> validate_verdict({"score": "8", "reasoning": "Right figure."})
    (8.0, 'Right figure.')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agility_mlflow.scoring._scorer import JudgedScore, JudgeInput

if TYPE_CHECKING:
    from agility_mlflow.scoring._judge_model import Judge

DEFAULT_CRITERIA = (
    "correctness (does it agree with the reference answer, with no wrong facts or figures), "
    "relevance (does it answer the question asked), level of detail (enough to be useful, nothing invented), "
    "and helpfulness"
)

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 600},
        # An enum, not minimum/maximum: grammar-constrained backends enforce it digit by digit.
        "score": {"type": "integer", "enum": list(range(1, 11))},
    },
    "required": ["reasoning", "score"],
}

_SYSTEM = """You are an impartial judge of answers written by an AI assistant.
Weigh {criteria}.
{reference_rule}Stay objective: the length of an answer and the order of its points do not earn points.
{style}Reply with one JSON object and nothing else: {{"reasoning": "<one or two sentences>", "score": <integer 1-10>}}.
A 10 is fully correct and helpful; a 1 is wrong or unhelpful."""

_WITH_REFERENCE = "Compare the assistant's answer with the reference answer first; any factual disagreement with the reference is a mistake.\n"
_WITHOUT_REFERENCE = "There is no reference answer: judge the answer on the question and the context alone.\n"


def judge_messages(item: JudgeInput, *, criteria: str | None, style_guide: str | None) -> list[dict[str, str]]:
    """The judge's system and user messages for one sample."""
    system = _SYSTEM.format(
        criteria=criteria or DEFAULT_CRITERIA,
        reference_rule=_WITH_REFERENCE if item.references else _WITHOUT_REFERENCE,
        style=f"Also hold the answer to this style guide:\n<style_guide>\n{style_guide.strip()}\n</style_guide>\n" if style_guide else "",
    )
    parts = [f"<question>\n{item.question}\n</question>"]
    if item.contexts:
        parts.append("<context>\n" + "\n\n".join(item.contexts) + "\n</context>")
    if item.references:
        parts.append("<reference_answer>\n" + "\n".join(item.references) + "\n</reference_answer>")
    parts.append(f"<assistant_answer>\n{item.answer}\n</assistant_answer>")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def validate_verdict(value: Any) -> tuple[float, str]:
    """``(score, reasoning)`` from the judge's JSON; a ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    if "score" not in value:
        raise ValueError("no 'score' key")
    try:
        score = float(value["score"])
    except (TypeError, ValueError):
        raise ValueError(f"score {value['score']!r} is not a number") from None
    if not 1 <= score <= 10:
        raise ValueError(f"score {score:g} is outside 1-10")
    reasoning = value.get("reasoning")
    if not isinstance(reasoning, str) or not reasoning.strip():
        raise ValueError("no 'reasoning' text")
    return score, reasoning.strip()


def score_llm_judge(item: JudgeInput, judge: Judge) -> JudgedScore:
    """One sample's 1-10 verdict from ``judge`` (asked again when its reply is malformed)."""
    messages = judge_messages(item, criteria=judge.config.criteria, style_guide=judge.style_guide)
    score, reasoning = judge.structured(messages, VERDICT_SCHEMA, validate_verdict)
    return JudgedScore(score, reasoning)
