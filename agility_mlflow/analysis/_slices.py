"""Slices: the paired rule on each value of each ``decision.slices`` column, Holm-adjusted.

A candidate can pass overall and still be worse on one part of the data (a question type, a
segment, a language). Each slice is compared with the same paired rule as the whole run
(:func:`~agility_mlflow.compare.compare_metric`); whether the candidate is worse there by more than
the metric's margin is a one-sided bootstrap test, and the tests of one candidate (columns x values x
primary metrics) are adjusted together with Holm's step-down, so many slices do not invent a loser.

Example:
    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from agility_mlflow.compare import MetricComparison, RunRecord, bootstrap_means, compare_metric, metric_direction, paired_values
from agility_mlflow.config import DecisionConfig
from agility_mlflow.errors import InputError

SliceOutcome = Literal["worse", "not worse", "insufficient"]


@dataclass(frozen=True)
class SliceResult:
    """One candidate on one slice (``column = value``) and one primary metric.

    Attributes:
        column, value: The slice.
        comparison: The paired comparison on the slice's samples (its interval at ``decision.confidence``).
        p_value: One-sided bootstrap p-value of "worse than the source by more than the margin".
        p_holm: ``p_value`` Holm-adjusted over the candidate's slice tests.
        outcome: ``worse`` (adjusted p at or below the one-sided level), ``not worse``, or
            ``insufficient`` (fewer paired samples than ``decision.slice_min_samples``: not tested).
    """

    column: str
    value: str
    comparison: MetricComparison
    p_value: float | None
    p_holm: float | None
    outcome: SliceOutcome

    @property
    def name(self) -> str:
        """``COLUMN=VALUE``."""
        return f"{self.column}={self.value}"

    @property
    def text(self) -> str:
        """E.g. ``question_type=novel: numeric_match -0.210 [-0.340, -0.080] (Holm p=0.004)``."""
        c = self.comparison
        if c.difference is None or self.outcome == "insufficient":
            return f"{self.name}: {c.metric} on only {c.n_paired} paired samples (minimum {c.min_samples}): insufficient"
        holm_text = f" (Holm p={self.p_holm:.3g})" if self.p_holm is not None else ""
        return f"{self.name}: {c.metric} {c.difference:+.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]{holm_text}"

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "value": self.value, "metric": self.comparison.metric, "outcome": self.outcome,
                "p_value": self.p_value, "p_holm": self.p_holm, "comparison": asdict(self.comparison)}


def slice_values(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, where: str) -> dict[str, dict[str, str]]:
    """Sample id to ``{column: value}`` from the golden dataset's rows; a missing column is an :class:`InputError`.

    Example:
        >>> slice_values([{"sample_id": "a", "kind": "ratio"}], ["kind"], where="golden.csv")
        {'a': {'kind': 'ratio'}}
    """
    present = set().union(*(row.keys() for row in rows)) if rows else set()
    for column in columns:
        if column not in present:
            raise InputError(f"{where}: key 'decision.slices': column '{column}' is not in the dataset (columns: {', '.join(sorted(present))})")
    return {str(row["sample_id"]): {column: _label(row.get(column)) for column in columns} for row in rows}


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return "(empty)"
    return str(value)


def slice_results(
    source: RunRecord,
    candidate: RunRecord,
    values: Mapping[str, Mapping[str, str]],
    *,
    metrics: Sequence[str],
    decision: DecisionConfig,
    directions: Mapping[str, bool] | None = None,
) -> list[SliceResult]:
    """Every slice of every ``decision.slices`` column for ``candidate``, on each metric in ``metrics``.

    Args:
        source, candidate: Runs with their rows loaded.
        values: Sample id to ``{column: value}`` (:func:`slice_values`).
        metrics: The primary metrics.
        decision: The ``decision:`` settings (margins, confidence, ``slices``, ``slice_min_samples``).
        directions: Metric name to higher-is-better; default the metric registry's.
    """
    rule = decision.model_copy(update={"min_samples": decision.slice_min_samples})
    results: list[tuple[str, str, MetricComparison, float | None]] = []
    for metric in metrics:
        higher = (directions or {}).get(metric, None)
        higher = metric_direction(metric) if higher is None else higher
        src_all, cand_all = source.scores(metric), candidate.scores(metric)
        for column in decision.slices:
            for value in sorted({v[column] for v in values.values()}):
                ids = {sample_id for sample_id, v in values.items() if v[column] == value}
                src = {k: s for k, s in src_all.items() if k in ids}
                cand = {k: s for k, s in cand_all.items() if k in ids}
                comparison = compare_metric(src, cand, metric, decision=rule, higher_is_better=higher)
                tested = comparison.n_paired >= rule.min_samples
                p = _worse_p_value(src, cand, comparison, rule) if tested else None
                results.append((column, value, comparison, p))
    adjusted = iter(holm([p for *_, p in results if p is not None]))
    alpha = (1.0 - decision.confidence) / 2
    out = []
    for column, value, comparison, p in results:
        if p is None:
            out.append(SliceResult(column, value, comparison, None, None, "insufficient"))
            continue
        p_holm = next(adjusted)
        out.append(SliceResult(column, value, comparison, p, p_holm, "worse" if p_holm <= alpha else "not worse"))
    return out


def _worse_p_value(source: Mapping[str, float], candidate: Mapping[str, float], comparison: MetricComparison, rule: DecisionConfig) -> float:
    """One-sided bootstrap p-value of H1 "the candidate loses more than the margin" (the mirror when lower is better)."""
    _, src, cand = paired_values(source, candidate)
    gains = (cand - src) if comparison.higher_is_better else (src - cand)
    means = bootstrap_means(gains, resamples=rule.bootstrap_resamples, seed=rule.seed)
    return float((1 + np.sum(means >= -comparison.margin)) / (len(means) + 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (monotone, capped at 1).

    Example:
        >>> holm([0.5]), holm([])
        ([0.5], [])
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = round(running, 12)
    return adjusted


def worse_slices_reason(results: Sequence[SliceResult], passed: bool) -> str | None:
    """The verdict's slice reason, e.g. ``passes overall; worse on question_type=novel: numeric_match -0.210 [...]``."""
    worse = [r.text for r in results if r.outcome == "worse"]
    if not worse:
        return None
    return ("passes overall; worse on " if passed else "worse on ") + "; ".join(worse)
