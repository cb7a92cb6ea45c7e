"""``answer_length``: how long the answer is (terser answers cost less and arrive sooner)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.scoring._metric import metric


@metric("answer_length", needs_reference=False, higher_is_better=False)
def answer_length(output: str, references: Sequence[str], sample: Mapping[str, Any]) -> float | None:
    """The number of whitespace-separated words in the answer.

    Example:
        >>> answer_length("Revenue was $1,577 million.", [], {})
        4.0
    """
    return float(len(output.split()))
