"""The decision rule: may a candidate replace the source? Verdicts with reasons, and the winner.

A candidate passes when every primary quality metric is non-inferior to the source on the samples
both answered, and it keeps every cost, latency and error limit. Pure functions of runs already
read from MLflow, so ``agility register`` and ``agility check`` apply the very same rule.

Example:
    >>> from agility_mlflow.config import DecisionConfig
    >>> source = RunRecord("s", "source", "source", metrics={"cost_usd_per_sample": 0.002, "latency_p95_s": 1.0},
    ...     rows=[{"sample_id": f"q{i}", "error": None, "exact_match": float(i % 2)} for i in range(40)])
    >>> candidate = RunRecord("c", "cheap/qa", "candidate", metrics={"cost_usd_per_sample": 0.001, "latency_p95_s": 1.5},
    ...     rows=[{"sample_id": f"q{i}", "error": None, "exact_match": float(i % 2)} for i in range(40)])
    >>> verdict = decide(source, candidate, metrics=["exact_match"], decision=DecisionConfig(margin=0.1))
    >>> verdict.outcome, verdict.reasons
    ('pass', ('exact_match +0.000 [-0.047, 0.047] within margin 0.1 (McNemar p=1)', 'cost -50%', 'p95 +0.50 s'))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from agility_mlflow.compare import _stats
from agility_mlflow.compare._runs import RunRecord
from agility_mlflow.config import DecisionConfig
from agility_mlflow.vocabulary import DATASET_DIGEST, SAMPLE_ID

# What a candidate's verdict says (not to be confused with runner.Outcome, one model call's result).
VerdictOutcome = Literal["pass", "fail", "insufficient", "stale"]
QUALITY = "quality"
"""The ``tie_break`` key for the first primary metric."""

_OUTCOME_ORDER = {"pass": 0, "insufficient": 1, "fail": 2, "stale": 3}


@dataclass(frozen=True)
class MetricComparison:
    """One quality metric, candidate against source, on the samples both runs scored.

    Attributes:
        metric: The metric name.
        primary: Whether it decides the verdict (else it is reported only).
        higher_is_better: The metric's direction.
        method: ``mcnemar`` (0/1 metric: exact McNemar test, Newcombe interval) or ``bootstrap``.
        n_paired: Samples both runs answered without error and the metric applies to.
        source_mean, candidate_mean: Means over the paired samples.
        difference: ``candidate_mean - source_mean``.
        ci_low, ci_high: Confidence interval of the difference.
        margin: The non-inferiority margin (absolute, on the metric's scale).
        p_value: McNemar's two-sided exact p-value (0/1 metrics only).
        sd_difference: Standard deviation of the per-sample differences.
        needed_samples: Paired samples needed to decide, when too few were available.
        outcome: ``pass``, ``fail`` or ``insufficient``; ``None`` for a reported-only metric, which
            decides nothing and so gets no verdict.
    """

    metric: str
    primary: bool
    higher_is_better: bool
    method: Literal["mcnemar", "bootstrap"]
    n_paired: int
    source_mean: float | None
    candidate_mean: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    margin: float
    p_value: float | None
    sd_difference: float | None
    needed_samples: int | None
    outcome: VerdictOutcome | None
    min_samples: int = 0

    @property
    def reason(self) -> str:
        """One line, e.g. ``token_f1 -0.010 [-0.040, 0.020] within margin 0.05``."""
        if self.difference is None:
            return f"{self.metric}: no paired samples" + (f"; need ~{self.needed_samples}" if self.needed_samples else "")
        text = f"{self.metric} {self.difference:+.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"
        if self.outcome is None:
            text += f" on {self.n_paired} paired samples (reported only)"
        elif self.n_paired < self.min_samples and self.outcome != "fail":
            text += f" on only {self.n_paired} paired samples (minimum {self.min_samples}): need ~{self.needed_samples}"
        elif self.outcome == "pass":
            text += f" within margin {self.margin:g}"
        elif self.outcome == "insufficient":
            text += f" crosses margin {self.margin:g}: need ~{self.needed_samples} paired samples (have {self.n_paired})"
        elif self._estimate_outside_margin():
            text += f" outside margin {self.margin:g}"
        else:
            text += f" crosses margin {self.margin:g} with {self.n_paired} paired samples"
        if not self.higher_is_better:
            text += " (lower is better)"
        if self.p_value is not None:
            text += f" (McNemar p={self.p_value:.3g})"
        return text

    def _estimate_outside_margin(self) -> bool:
        assert self.difference is not None
        return self.difference <= -self.margin if self.higher_is_better else self.difference >= self.margin


@dataclass(frozen=True)
class LimitCheck:
    """A cost, latency or error-rate check from the runs' metrics.

    Attributes:
        name: ``cost``, ``latency_p95`` or ``errors``.
        value: The candidate's value (``cost_usd_per_sample``, ``latency_p95_s``, error rate).
        source_value: The source's value, when known.
        passed: Whether every limit on it holds (no limit set: always).
        text: The reason text, e.g. ``cost -62%`` or ``p95 +0.30 s (2.30 s) over limit 2 s``; empty
            when there is nothing worth saying.
    """

    name: str
    value: float | None
    source_value: float | None
    passed: bool
    text: str


@dataclass(frozen=True)
class Verdict:
    """A candidate's verdict against the source.

    Attributes:
        run: The candidate run.
        outcome: ``pass``, ``fail``, ``insufficient`` (too few paired samples to decide) or
            ``stale`` (scored on another golden dataset than the source run: not decided).
        reasons: Human-readable reasons, primary metrics first, then cost, latency and errors.
        comparisons: Every compared quality metric (primary and reported-only).
        limits: The cost, latency and error checks.
        needed_samples: For ``insufficient``: paired samples needed to decide.
    """

    run: RunRecord
    outcome: VerdictOutcome
    reasons: tuple[str, ...]
    comparisons: tuple[MetricComparison, ...] = ()
    limits: tuple[LimitCheck, ...] = ()
    needed_samples: int | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def comparison(self, metric: str) -> MetricComparison | None:
        return next((c for c in self.comparisons if c.metric == metric), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the comparison run's ``verdicts.json``)."""
        return {
            "run_id": self.run.run_id,
            "name": self.run.name,
            "role": self.run.role,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "needed_samples": self.needed_samples,
            "comparisons": [asdict(c) for c in self.comparisons],
            "limits": [asdict(limit) for limit in self.limits],
        }


def metric_direction(name: str) -> bool:
    """True when higher values of ``name`` are better (:func:`agility_mlflow.scoring.higher_is_better`, the one rule)."""
    from agility_mlflow.scoring import higher_is_better

    return higher_is_better(name)


def compare_metric(
    source: Mapping[str, float],
    candidate: Mapping[str, float],
    metric: str,
    *,
    decision: DecisionConfig,
    higher_is_better: bool = True,
    primary: bool = True,
) -> MetricComparison:
    """Compare per-sample values of one metric, paired by sample id.

    Samples in only one run are left out. The rule, for the difference candidate - source (the
    mirror image when lower is better):

    - the whole interval below ``-margin``: ``fail``, whatever the number of pairs (no amount of
      data can rescue a loss the interval already shows);
    - fewer than ``decision.min_samples`` pairs: ``insufficient``;
    - the interval's lower bound above ``-margin``: ``pass``;
    - the estimate itself at or below ``-margin``: ``fail``;
    - otherwise the interval crosses the margin: ``insufficient`` when more samples could decide it
      (the number needed is above the pairs at hand), else ``fail``.

    A reported-only metric (``primary=False``) gets the same numbers but no outcome.

    The number needed is the power formula (:func:`~agility_mlflow.compare.required_samples`, the
    observed loss taken as the true one); for a 0/1 metric, at least the samples at which its
    Newcombe interval would clear the margin (:func:`~agility_mlflow.compare.newcombe_required_samples`).

    Args:
        source: Sample id to the source's value.
        candidate: Sample id to the candidate's value.
        metric: The metric's name; its margin is ``decision.margins[metric]`` or ``decision.margin``.
        decision: The ``decision:`` settings.
        higher_is_better: The metric's direction.
        primary: Whether the metric decides the verdict.

    Example:
        >>> from agility_mlflow.config import DecisionConfig
        >>> c = compare_metric({"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 0.5, "c": 0.0}, "token_f1",
        ...                    decision=DecisionConfig(min_samples=2))
        >>> c.n_paired, c.difference, (c.ci_low, c.ci_high), c.outcome
        (2, 0.0, (0.0, 0.0), 'pass')
        >>> same = {f"q{i}": float(i % 2) for i in range(30)}  # 30 identical 0/1 answers: too few to rule out -0.05
        >>> c = compare_metric(same, same, "exact_match", decision=DecisionConfig())
        >>> c.outcome, c.needed_samples
        ('insufficient', 38)
        >>> loss = compare_metric(same, {k: 0.0 for k in same}, "exact_match", decision=DecisionConfig(min_samples=100))
        >>> loss.outcome, loss.needed_samples  # 30 pairs are fewer than 100, but the interval already shows the loss
        ('fail', None)
    """
    margin = decision.margins.get(metric, decision.margin)
    _, src, cand = _stats.paired_values(source, candidate)
    n = len(src)
    binary = decision.method == "auto" and n > 0 and _stats.is_binary(src, cand)
    method: Literal["mcnemar", "bootstrap"] = "mcnemar" if binary else "bootstrap"
    if n == 0:
        return MetricComparison(
            metric, primary, higher_is_better, method, 0, None, None, None, None, None, margin, None, None,
            decision.min_samples if primary else None, "insufficient" if primary else None, decision.min_samples,
        )
    differences = cand - src
    difference = float(differences.mean())
    p_value = None
    counts = None
    if binary:
        first_only = int(((cand == 1) & (src == 0)).sum())
        second_only = int(((cand == 0) & (src == 1)).sum())
        both = int(((cand == 1) & (src == 1)).sum())
        counts = (both, first_only, second_only, n - both - first_only - second_only)
        low, high = _stats.newcombe_paired_ci(*counts, confidence=decision.confidence)
        p_value = _stats.mcnemar_exact_p(first_only, second_only)
    else:
        low, high = _stats.paired_bootstrap_ci(
            differences, confidence=decision.confidence, resamples=decision.bootstrap_resamples, seed=decision.seed
        )
    sd = _stats.sample_sd(differences)
    # In the metric's better direction: positive when the candidate is better.
    gain = difference if higher_is_better else -difference
    needed = None
    # The interval of the gain, in the metric's better direction.
    gain_high = high if higher_is_better else -low
    outcome: VerdictOutcome | None
    if gain_high < -margin:
        outcome = "fail"
    elif n < decision.min_samples:
        outcome = "insufficient"
        expected = gain if -margin < gain < 0 else 0.0
        needed = max(decision.min_samples, _needed(sd, margin, expected, decision, counts, higher_is_better) or 0)
    elif _stats.non_inferior(low, high, margin, higher_is_better=higher_is_better):
        outcome = "pass"
    elif gain <= -margin:
        outcome = "fail"
    else:
        needed = _needed(sd, margin, min(gain, 0.0), decision, counts, higher_is_better)
        outcome = "insufficient" if needed is not None and needed > n else "fail"
        if outcome == "fail":
            needed = None
    if not primary:
        outcome, needed = None, None
    return MetricComparison(
        metric, primary, higher_is_better, method, n, float(src.mean()), float(cand.mean()), difference,
        low, high, margin, p_value, sd, needed, outcome, decision.min_samples,
    )


def _needed(
    sd: float,
    margin: float,
    expected_gain: float,
    decision: DecisionConfig,
    counts: tuple[int, int, int, int] | None = None,
    higher_is_better: bool = True,
) -> int | None:
    """Paired samples needed: the power formula; for a 0/1 metric (``counts``) at least what its interval needs."""
    needed = _stats.required_samples(sd, margin, confidence=decision.confidence, power=decision.power, expected_difference=expected_gain)
    if needed is None or counts is None:
        return needed
    # With few discordant pairs the differences barely vary and the formula says "enough" while
    # Newcombe's interval still crosses the margin: ask the interval itself.
    projected = _stats.newcombe_required_samples(*counts, margin, confidence=decision.confidence, higher_is_better=higher_is_better)
    return None if projected is None else max(needed, projected)


def check_limits(source: RunRecord, candidate: RunRecord, decision: DecisionConfig) -> tuple[LimitCheck, ...]:
    """Cost, p95 latency and error rate against the ``decision:`` limits, from the runs' metrics.

    A limit that cannot be checked (the cost is unknown because no price is known) fails.

    Example:
        >>> from agility_mlflow.config import DecisionConfig
        >>> source = RunRecord("s", "source", "source", metrics={"cost_usd_per_sample": 0.002, "latency_p95_s": 1.7})
        >>> candidate = RunRecord("c", "c/qa", "candidate", metrics={"cost_usd_per_sample": 0.00076, "latency_p95_s": 2.0,
        ...                                                         "n_samples": 40, "n_errors": 1})
        >>> [(c.passed, c.text) for c in check_limits(source, candidate, DecisionConfig(max_latency_p95_s=1.9))]
        [(True, 'cost -62%'), (False, 'p95 +0.30 s (2.00 s) over limit 1.9 s'), (True, 'errors 2%')]
    """
    return (
        _limit(
            "cost", "cost_usd_per_sample", source, candidate, decision.max_cost_per_sample_usd, decision.max_cost_ratio,
            relative=lambda c, s: f"cost {100 * (c / s - 1):+.0f}%", absolute=lambda c: f"cost ${c:.6g}/sample",
            over=lambda c, limit: f"(${c:.6g}/sample) over limit ${limit:g}/sample",
        ),
        _limit(
            "latency_p95", "latency_p95_s", source, candidate, decision.max_latency_p95_s, decision.max_latency_p95_ratio,
            relative=lambda c, s: f"p95 {c - s:+.2f} s", absolute=lambda c: f"p95 {c:.2f} s",
            over=lambda c, limit: f"({c:.2f} s) over limit {limit:g} s",
        ),
        _error_limit(candidate, decision.max_error_rate),
    )


def _limit(
    name: str,
    key: str,
    source: RunRecord,
    candidate: RunRecord,
    limit: float | None,
    ratio_limit: float | None,
    *,
    relative: Any,
    absolute: Any,
    over: Any,
) -> LimitCheck:
    value = candidate.metrics.get(key)
    reference = source.metrics.get(key)
    label = name.replace("_", " ")
    if value is None:
        limited = limit is not None or ratio_limit is not None
        return LimitCheck(name, None, reference, not limited, f"{label} unknown" + (", so its limit fails" if limited else ""))
    text = relative(value, reference) if reference else absolute(value)
    problems = []
    if limit is not None and value > limit:
        problems.append(over(value, limit))
    if ratio_limit is not None:
        if reference is None:
            problems.append(f"source {label} unknown, so the x{ratio_limit:g} limit fails")
        elif value > ratio_limit * reference:
            problems.append(f"over limit x{ratio_limit:g} the source")
    return LimitCheck(name, value, reference, not problems, " ".join([text, *problems]))


def _error_limit(candidate: RunRecord, max_rate: float) -> LimitCheck:
    n = candidate.metrics.get("n_samples") or 0.0
    rate = (candidate.metrics.get("n_errors") or 0.0) / n if n else 0.0
    passed = rate <= max_rate
    text = "" if rate == 0 else f"errors {rate:.0%}" + ("" if passed else f" over limit {max_rate:.0%}")
    return LimitCheck("errors", rate, None, passed, text)


def on_samples_of(source: RunRecord, candidate: RunRecord) -> RunRecord:
    """``source`` with its cost and latency metrics recomputed over the samples ``candidate`` scored.

    A candidate scored on part of the golden set (an optimization's test split, a ``--limit`` run) is held
    to the source's cost and p95 latency on those same samples, as its quality is: the source's run
    metrics cover every sample and would compare two different sets. Unchanged when either side's rows
    are not loaded or the candidate scored every sample the source did.

    Example:
        >>> rows = [{"sample_id": str(i), "latency_s": float(i), "cost_usd": 0.1, "error": None} for i in range(1, 11)]
        >>> source = RunRecord("s", "source", "source", metrics={"latency_p95_s": 9.55}, rows=tuple(rows))
        >>> candidate = RunRecord("c", "c/qa", "candidate", rows=tuple(r for r in rows if int(r["sample_id"]) <= 2))
        >>> on_samples_of(source, candidate).metrics["latency_p95_s"]
        1.95
    """
    if source.rows is None or candidate.rows is None:
        return source
    scored = {str(row[SAMPLE_ID]) for row in candidate.rows}
    shared = [row for row in source.rows if str(row[SAMPLE_ID]) in scored]
    if not shared or len(shared) == len(source.rows):
        return source
    from agility_mlflow.scoring import run_metrics

    return replace(source, metrics={**source.metrics, **run_metrics(shared)})


def decide(
    source: RunRecord,
    candidate: RunRecord,
    *,
    metrics: Sequence[str],
    decision: DecisionConfig,
    primary: Sequence[str] | None = None,
    directions: Mapping[str, bool] | None = None,
) -> Verdict:
    """The verdict on ``candidate`` against ``source``.

    ``fail`` when a limit fails or a primary metric fails; else ``insufficient`` when a primary
    metric needs more samples; else ``pass``. When the candidate's per-sample rows are not loaded
    (a limit already failed on its run metrics), quality is not compared.

    Args:
        source: The source run, rows loaded.
        candidate: The candidate run; rows loaded unless a limit fails.
        metrics: Quality metrics to compare (reported); those in ``primary`` decide.
        decision: The ``decision:`` settings.
        primary: Deciding metrics; default ``decision.primary``, else every metric in ``metrics``.
        directions: Metric name to higher-is-better; default the metric registry's.
    """
    primary = list(primary or decision.primary or metrics)
    limits = check_limits(on_samples_of(source, candidate), candidate, decision)
    limit_reasons = tuple(c.text for c in limits if c.text)
    limits_pass = all(c.passed for c in limits)
    if candidate.rows is None:
        if limits_pass:
            raise ValueError(f"run {candidate.run_id}: per-sample results are needed to compare quality")
        return Verdict(candidate, "fail", (*limit_reasons, "quality not compared: a limit already fails"), (), limits)
    directions = directions or {}
    comparisons = tuple(
        compare_metric(
            source.scores(name), candidate.scores(name), name, decision=decision,
            higher_is_better=directions[name] if name in directions else metric_direction(name), primary=name in primary,
        )
        for name in dict.fromkeys([*primary, *metrics])
    )
    deciding = [c for c in comparisons if c.primary]
    if not limits_pass or any(c.outcome == "fail" for c in deciding):
        outcome: VerdictOutcome = "fail"
    elif any(c.outcome == "insufficient" for c in deciding):
        outcome = "insufficient"
    else:
        outcome = "pass"
    needed = max((c.needed_samples for c in deciding if c.outcome == "insufficient" and c.needed_samples), default=None)
    return Verdict(
        candidate, outcome, tuple(c.reason for c in deciding) + limit_reasons, comparisons, limits,
        needed if outcome == "insufficient" else None,
    )


def stale_verdict(source: RunRecord, candidate: RunRecord) -> Verdict | None:
    """A ``stale`` verdict when ``candidate`` was scored on another dataset than ``source``, else ``None``.

    Runs are paired by sample id, so runs on two versions of the golden set (a corrected reference, a
    changed question) would be compared on different data: such a run is listed, never decided. A run
    that records no digest while the other does counts as another dataset.

    Example:
        >>> source = RunRecord("s", "source", "source", params={"dataset_digest": "a1"})
        >>> stale_verdict(source, RunRecord("c", "c/qa", "candidate", params={"dataset_digest": "b2"})).reasons
        ('scored on dataset b2, the source run on a1: re-run it on the current dataset to compare it',)
        >>> stale_verdict(source, RunRecord("d", "d/qa", "candidate", params={"dataset_digest": "a1"})) is None
        True
    """
    theirs, ours = candidate.params.get(DATASET_DIGEST), source.params.get(DATASET_DIGEST)
    if theirs == ours:
        return None
    reason = f"scored on dataset {theirs or '(no digest recorded)'}, the source run on {ours or '(no digest recorded)'}"
    return Verdict(candidate, "stale", (f"{reason}: re-run it on the current dataset to compare it",))


def rank(verdicts: Sequence[Verdict], *, tie_break: Sequence[str], primary_metric: str) -> list[Verdict]:
    """Verdicts in display order: passing first, then insufficient, then failing; each group by ``tie_break``.

    ``quality`` in ``tie_break`` stands for ``primary_metric``; any other key is a run metric. Runs
    missing a key's value come after those that have it; the run name, then id, settle full ties.
    """

    def key(verdict: Verdict) -> tuple[Any, ...]:
        parts: list[Any] = [_OUTCOME_ORDER[verdict.outcome]]
        for name in tie_break:
            metric = primary_metric if name == QUALITY else name
            value = verdict.run.metrics.get(metric)
            if value is None or math.isnan(value):
                parts.append((1, 0.0))
            else:
                parts.append((0, -value if metric_direction(metric) else value))
        return (*parts, verdict.run.name, verdict.run.run_id)

    return sorted(verdicts, key=key)


def pick_winner(verdicts: Sequence[Verdict], *, tie_break: Sequence[str], primary_metric: str) -> Verdict | None:
    """The best passing verdict by ``tie_break``; ``None`` when no candidate passes.

    Example:
        >>> a = Verdict(RunRecord("a", "a", "candidate", metrics={"token_f1": 0.8, "cost_usd_per_sample": 2.0}), "pass", ())
        >>> b = Verdict(RunRecord("b", "b", "candidate", metrics={"token_f1": 0.8, "cost_usd_per_sample": 1.0}), "pass", ())
        >>> c = Verdict(RunRecord("c", "c", "candidate", metrics={"token_f1": 0.9, "cost_usd_per_sample": 0.5}), "fail", ())
        >>> pick_winner([a, b, c], tie_break=["quality", "cost_usd_per_sample"], primary_metric="token_f1").run.name
        'b'
    """
    ranked = rank(verdicts, tie_break=tie_break, primary_metric=primary_metric)
    return ranked[0] if ranked and ranked[0].passed else None
