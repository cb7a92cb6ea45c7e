"""How far to trust the judge: its agreement with human scores of the same answers.

Two figures, because they answer different questions: Spearman's rank correlation (does the
judge order answers as the humans do?) and Cohen's kappa on scores binned into low / mid / high
thirds of each scale (does it put them in the same grade, beyond chance?). Each score is binned
on its own scale: the judge's 1-10, the humans' inferred from their values (0-1, 1-5 or 1-10).

Example:
    >>> judge = [2, 3, 5, 6, 8, 9, 9, 10]
    >>> human = [1, 1, 3, 3, 4, 4, 5, 5]  # a 1-5 scale
    >>> m = agreement(judge, human)
    >>> round(m["judge_human_spearman"], 3), m["judge_human_kappa"], m["judge_human_n"]
    (0.957, 1.0, 8.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeGuard

JUDGE_SCALE = (1.0, 10.0)
_HUMAN_SCALES = ((0.0, 1.0), (1.0, 5.0), (1.0, 10.0), (0.0, 10.0), (0.0, 100.0))


def agreement(
    judge: Sequence[float | None], human: Sequence[float | None], *, judge_scale: tuple[float, float] | None = JUDGE_SCALE
) -> dict[str, float]:
    """``judge_human_spearman``, ``judge_human_kappa`` and ``judge_human_n`` over the pairs where both scored.

    ``judge_scale=None`` infers the judge's scale as the humans' is (for a 0-1 score playing the judge).

    With fewer than 3 pairs, or when either side gives every answer the same score, only
    ``judge_human_n`` is returned: there is nothing to correlate.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    pairs = [(float(j), float(h)) for j, h in zip(judge, human) if _number(j) and _number(h)]
    result = {"judge_human_n": float(len(pairs))}
    if len(pairs) < 3:
        return result
    judged, humans = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(set(judged)) < 2 or len(set(humans)) < 2:
        return result
    result["judge_human_spearman"] = float(spearmanr(judged, humans).statistic)
    scale, judged_on = human_scale(humans), judge_scale or human_scale(judged)
    kappa = cohen_kappa_score([grade(v, judged_on) for v in judged], [grade(v, scale) for v in humans], labels=[0, 1, 2])
    if not math.isnan(kappa):
        result["judge_human_kappa"] = float(kappa)
    return result


def human_scale(values: Sequence[float]) -> tuple[float, float]:
    """The smallest usual scale that holds every human score (else their own range).

    Example:
        >>> human_scale([1, 4, 5]), human_scale([0.2, 0.9]), human_scale([3, 7])
        ((1.0, 5.0), (0.0, 1.0), (1.0, 10.0))
    """
    low, high = min(values), max(values)
    for scale in _HUMAN_SCALES:
        if scale[0] <= low and high <= scale[1]:
            return scale
    return (low, high)


def grade(value: float, scale: tuple[float, float]) -> int:
    """0, 1 or 2: the third of ``scale`` that ``value`` falls in (a boundary value goes up).

    Example:
        >>> [grade(v, (1.0, 10.0)) for v in (1, 3, 4, 6, 7, 10)]
        [0, 0, 1, 1, 2, 2]
        >>> [grade(v, (1.0, 5.0)) for v in (1, 2, 3, 4, 5)]
        [0, 0, 1, 2, 2]
    """
    low, high = scale
    position = (value - low) / (high - low) if high > low else 0.5
    return min(2, max(0, int(position * 3 + 1e-9)))


def _number(value: float | None) -> TypeGuard[float]:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
