"""Error analysis: why a candidate loses, where, and how its answers drift from the source's.

Three parts, each usable alone:

- drift (no judge): length, truncation, empty answers, refusals, JSON and Markdown shape, numbers
  and their units, language, candidate against source on the same samples (``drift.<name>`` metrics);
- error categories: each sample the candidate loses gets one category and a reason, from the judge
  (through the runner, cost counted) or offline from the drift signals and a clustering of the answers;
- slices: the paired rule on each value of each ``decision.slices`` column, Holm-adjusted.

Its text is the feedback the prompt optimizer reads (:func:`feedback_for`).

Example:
    >>> from agility_mlflow.analysis import analyze
    >>> result = analyze("projects/financial-qa/agility.yaml")  # doctest: +SKIP
    >>> print(result.text())  # doctest: +SKIP

    >>> source = [{"sample_id": "a", "output": "Revenue was $1,577 million.", "reference": "$1,577 million", "error": None}]
    >>> candidate = [{"sample_id": "a", "output": "1,577", "reference": "$1,577 million", "error": None}]
    >>> drift(source, candidate).metrics()["drift.unit_dropped_rate"]
    1.0
"""

from agility_mlflow.analysis._analyze import (
    DEFAULT_OUTPUT,
    Analysis,
    RunAnalysis,
    analysis_metric,
    analyze,
    analyze_run,
)
from agility_mlflow.analysis._categories import (
    DEFAULT_CATEGORIES,
    Categorized,
    Failure,
    categorize_offline,
    categorize_with_judge,
    cluster_texts,
    failing_samples,
    rule_category,
    taxonomy,
)
from agility_mlflow.analysis._drift import (
    REFUSAL_PATTERNS,
    AnswerSignals,
    Drift,
    SampleDrift,
    answer_signals,
    detect_language,
    drift,
    unit_dropped,
)
from agility_mlflow.analysis._feedback import analysis_for, feedback_for, feedback_text
from agility_mlflow.analysis._report import category_table, drift_table, slice_table
from agility_mlflow.analysis._slices import SliceResult, holm, slice_results, slice_values, worse_slices_reason
from agility_mlflow.vocabulary import ANALYSIS_ARTIFACT

__all__ = [
    "ANALYSIS_ARTIFACT",
    "DEFAULT_CATEGORIES",
    "DEFAULT_OUTPUT",
    "REFUSAL_PATTERNS",
    "Analysis",
    "AnswerSignals",
    "Categorized",
    "Drift",
    "Failure",
    "RunAnalysis",
    "SampleDrift",
    "SliceResult",
    "analysis_for",
    "analysis_metric",
    "analyze",
    "analyze_run",
    "answer_signals",
    "categorize_offline",
    "categorize_with_judge",
    "category_table",
    "cluster_texts",
    "detect_language",
    "drift",
    "drift_table",
    "failing_samples",
    "feedback_for",
    "feedback_text",
    "holm",
    "rule_category",
    "slice_results",
    "slice_table",
    "slice_values",
    "taxonomy",
    "unit_dropped",
    "worse_slices_reason",
]
