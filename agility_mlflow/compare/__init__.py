"""Compare candidates with the source, decide, report, and name the winner.

A candidate may replace the source when every primary quality metric is non-inferior on the same
samples (a paired confidence interval of candidate - source within the metric's margin) and it
keeps the cost, latency and error limits of the config's ``decision:`` section.

Example:
    >>> from agility_mlflow.compare import compare
    >>> result = compare("projects/financial-qa/agility.yaml", output="agility-report")  # doctest: +SKIP
    >>> [(v.run.name, v.outcome) for v in result.verdicts]  # doctest: +SKIP
    [('local-smollm/fin-qa', 'fail'), ('local-smollm/fin-qa-concise', 'fail')]

The statistics and the rule are pure functions, reusable without MLflow:

    >>> newcombe_paired_ci(59, 6, 16, 80)  # doctest: +ELLIPSIS
    (-0.1186..., -0.0046...)
"""

from agility_mlflow.compare._compare import DEFAULT_OUTPUT, compare, latest_per_candidate, without_optimization_trials
from agility_mlflow.compare._decision import (
    LimitCheck,
    MetricComparison,
    Verdict,
    VerdictOutcome,
    check_limits,
    compare_metric,
    decide,
    metric_direction,
    on_samples_of,
    pick_winner,
    rank,
    stale_verdict,
)
from agility_mlflow.compare._plots import pareto_front
from agility_mlflow.compare._query import (
    candidate_runs,
    finished_with_role,
    iter_runs,
    latest_source_run,
    load_results,
    read_results,
    to_record,
)
from agility_mlflow.compare._report import Report, build_report
from agility_mlflow.compare._result import Comparison
from agility_mlflow.compare._runs import RunRecord
from agility_mlflow.compare._stats import (
    bootstrap_means,
    is_binary,
    mcnemar_exact_p,
    newcombe_paired_ci,
    newcombe_required_samples,
    non_inferior,
    paired_bootstrap_ci,
    paired_values,
    required_samples,
    wilson_interval,
)
from agility_mlflow.vocabulary import RESULTS_ARTIFACT, SOURCE_RUN, WINNER, WINNER_NAME

__all__ = [
    "DEFAULT_OUTPUT",
    "RESULTS_ARTIFACT",
    "SOURCE_RUN",
    "WINNER",
    "WINNER_NAME",
    "Comparison",
    "LimitCheck",
    "MetricComparison",
    "Report",
    "RunRecord",
    "Verdict",
    "VerdictOutcome",
    "bootstrap_means",
    "build_report",
    "candidate_runs",
    "check_limits",
    "compare",
    "compare_metric",
    "decide",
    "on_samples_of",
    "finished_with_role",
    "is_binary",
    "iter_runs",
    "latest_per_candidate",
    "latest_source_run",
    "load_results",
    "mcnemar_exact_p",
    "metric_direction",
    "newcombe_paired_ci",
    "newcombe_required_samples",
    "non_inferior",
    "paired_bootstrap_ci",
    "paired_values",
    "pareto_front",
    "pick_winner",
    "rank",
    "read_results",
    "required_samples",
    "stale_verdict",
    "to_record",
    "wilson_interval",
    "without_optimization_trials",
]
