"""The analysis as feedback for what comes next: text an optimizer's reflection model reads, and the same as data.

Example:
    >>> source = [{"sample_id": "a", "output": "Revenue was $1,577 million.", "reference": "$1,577 million", "error": None, "f1": 0.9}]
    >>> rows = [{"sample_id": "a", "output": "1,577", "reference": "$1,577 million", "error": None, "f1": 0.2}]
    >>> print(feedback_for(rows, source_rows=source, metric="f1"))  # doctest: +NORMALIZE_WHITESPACE
    1 of 1 answers score below the source's on f1.
    Errors by category (with examples):
    - missing_unit (1): Gives the right figure without its unit or scale ($, million, %).
      - sample a: answer "1,577"; expected "$1,577 million"; gives the figure without the reference's unit or scale ($1,577 million)
    Drift from the source's answers: figure without its unit or scale 100% (source 0%); length in words, candidate / source x0.25.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.analysis._analyze import RunAnalysis
from agility_mlflow.analysis._categories import CANDIDATE, categorize_offline, failing_samples, taxonomy
from agility_mlflow.analysis._drift import drift
from agility_mlflow.analysis._report import _short, drift_lines
from agility_mlflow.compare import RunRecord


def feedback_for(rows: Sequence[Mapping[str, Any]], *, examples: int = 2, **options: Any) -> str:
    """What went wrong in ``rows`` (``eval_results`` rows of one evaluation), as text for a reflection model.

    The text of :func:`analysis_for` ``(rows, **options)`` (which documents the options), with
    ``examples`` examples per category. Offline and deterministic: no model is called.
    """
    return analysis_for(rows, **options).feedback_text(examples)


def analysis_for(
    rows: Sequence[Mapping[str, Any]],
    *,
    source_rows: Sequence[Mapping[str, Any]] = (),
    metric: str,
    higher_is_better: bool = True,
    threshold: float | None = None,
    categories: Mapping[str, str] | None = None,
    questions: Mapping[str, str] | None = None,
    seed: int = 0,
) -> RunAnalysis:
    """The offline :class:`RunAnalysis` of ``rows`` (the data behind :func:`feedback_for`: counts, examples, drift).

    The failing samples are those below the source's answer on ``metric`` (when ``source_rows`` are
    given) or below ``threshold``; with neither, those below the rows' own mean.

    Args:
        rows: The evaluated rows (``sample_id``, ``output``, ``reference``, ``error``, ``finish_reason``, scores).
        source_rows: The source's rows on the same samples, to pair with.
        metric: The score column that says a sample failed.
        higher_is_better: ``metric``'s direction.
        threshold: Also a failure below this value.
        categories: A taxonomy ``{name: description}``; default the built-in one.
        questions: Sample id to question, shown in the examples.
        seed: Clustering seed.
    """
    if not source_rows and threshold is None:
        scored = [float(r[metric]) for r in rows if r.get("error") is None and isinstance(r.get(metric), (int, float))]
        threshold = sum(scored) / len(scored) if scored else None
    candidate = RunRecord("evaluated", "evaluated", "candidate", rows=tuple(rows))
    source = RunRecord("source", "source", "source", rows=tuple(source_rows))
    taxonomy_used = taxonomy(categories)
    failures = [f for f in failing_samples(source_rows, rows, metric, higher_is_better=higher_is_better, threshold=threshold)
                if f.side == CANDIDATE]
    categorized = categorize_offline(failures, source.rows_by_id(), candidate.rows_by_id(), taxonomy_used, seed=seed)
    return RunAnalysis(candidate, source, metric, drift(source_rows, rows), categorized, taxonomy_used, questions=questions or {})


def feedback_text(item: RunAnalysis, examples: int = 2) -> str:
    """The feedback text of one analysis (offline or judged): failing share, categories with examples, drift, worse slices."""
    losing = item.side(CANDIDATE)
    answered = sum(1 for row in item.run.rows or () if row.get("error") is None)
    against = "the source's" if item.source.rows else "the bar"
    lines = [f"{len(losing)} of {answered} answers score below {against} on {item.metric}."]
    if losing:
        lines.append("Errors by category (with examples):")
    rows = item.run.rows_by_id()
    for name, (count, _) in sorted(item.counts().items(), key=lambda kv: -kv[1][0]):
        if not count:
            continue
        lines.append(f"- {name} ({count}): {item.categories.get(name, '')}".rstrip())
        for example in item.examples(name, examples):
            sample_id = example.failure.sample_id
            row = rows.get(sample_id, {})
            question = item.questions.get(sample_id)
            asked = f"question \"{_short(question, 160)}\"; " if question else ""
            lines.append(f"  - sample {sample_id}: {asked}answer \"{_short(row.get('output'), 160)}\"; "
                         f"expected \"{_short(row.get('reference'), 120)}\"; {example.reason}")
    drift = [f"{label} {cand}" + (f" (source {src})" if src else "") for label, src, cand in drift_lines(item)
             if label not in ("words per answer", "output tokens per answer")]
    if drift:
        lines.append("Drift from the source's answers: " + "; ".join(drift) + ".")
    worse = [s.text for s in item.slices if s.outcome == "worse"]
    if worse:
        lines.append("Worse than the source on: " + "; ".join(worse) + ".")
    return "\n".join(lines)
