"""Metrics that decide whether the answer *is* the reference: ``exact_match`` and ``numeric_match``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.scoring._common import Number, normalize, numbers
from agility_mlflow.scoring._metric import metric


@metric("exact_match")
def exact_match(output: str, references: Sequence[str], sample: Mapping[str, Any]) -> float | None:
    """1.0 when the normalized answer equals a normalized reference, else 0.0.

    Normalization lowercases and drops punctuation, articles and extra spaces, so ``"The answer
    is 42."`` matches ``"answer is 42"``; but ``"42"`` does not match ``"It is 42"``: use
    ``token_f1`` or ``numeric_match`` for answers wrapped in a sentence.

    Example:
        >>> exact_match("The Yes.", ["yes"], {})
        1.0
    """
    if not references:
        return None
    answer = normalize(output)
    return float(any(answer == normalize(ref) for ref in references))


def _same(a: Number, b: Number, rel_tol: float) -> bool:
    return any(
        math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-9)
        for x, y in ((a.value, b.value), (a.scaled, b.scaled))
    )


@metric("numeric_match")
def numeric_match(output: str, references: Sequence[str], sample: Mapping[str, Any], rel_tol: float = 0.01) -> float | None:
    """1.0 when every number in a reference appears in the answer within ``rel_tol`` (1%), else 0.0.

    Args:
        rel_tol: Relative tolerance; 1% lets ``$1,577 million`` match ``$1577.00`` and ``1.58 billion``.

    Notes:
        Numbers compare both as written and after scale words (``$1.577 billion`` matches
        ``1,577 million``). A percent sign is ignored, so ``60%`` matches ``60`` (and ``0.6`` does
        not). Years in the reference are numbers too and must appear in the answer. Samples whose
        reference has no number are not applicable (``None``) and are left out of the mean.

    Example:
        >>> numeric_match("Revenue was $1,577 million.", ["$1577.00"], {})
        1.0
        >>> numeric_match("About 1,600", ["1577"], {}) , numeric_match("Yes", ["Yes"], {}) is None
        (0.0, True)
    """
    best: float | None = None
    found = numbers(output)
    for ref in references:
        wanted = numbers(ref)
        if not wanted:
            continue
        score = float(all(any(_same(w, f, rel_tol) for f in found) for w in wanted))
        best = score if best is None else max(best, score)
    return best
