"""Evaluating prompts on models into MLflow runs, split by concern as MLflow's ``genai.evaluation`` is.

- :mod:`._entities`: what an evaluation is made of (``PlannedRun``, ``Project``, ``EvaluationResult``, ``RunSummary``).
- :mod:`._planning`: load and cross-check a project before any call (``prepare``), estimate its worst case.
- :mod:`._judging`: the ``judge:`` model, built and bound into the judged metrics.
- :mod:`._harness`: generate, score and aggregate one configuration on samples (writes nothing).
- :mod:`._calibration`: the judge's agreement with human scores of the source answers.
- :mod:`._log`: one evaluation's params, metrics, table, dataset and traces written to its run.
- :mod:`._session`: ``EvaluationSession``, which owns the backends, runner, judge and experiment, and
  evaluates a configuration into one scored, logged run.
- :mod:`._base`: ``agility run`` (``run_project``).

Example:
    >>> results = run_project("projects/financial-qa/agility.yaml", limit=3)  # doctest: +SKIP
    >>> [(r.role, r.name, r.metrics["n_samples"]) for r in results]  # doctest: +SKIP
    [('source', 'source', 3.0), ('candidate', 'local-smollm', 3.0)]
"""

from agility_mlflow.evaluation._base import run_project
from agility_mlflow.evaluation._calibration import calibrate
from agility_mlflow.evaluation._entities import (
    CONTEXT,
    HUMAN_SCORE,
    INPUT_DIGEST,
    EvaluationResult,
    PlannedRun,
    Project,
    RunSummary,
)
from agility_mlflow.evaluation._harness import (
    aggregate,
    combine,
    evaluate,
    evaluate_samples,
    input_columns,
    input_digest,
    judge_input,
    score_samples,
)
from agility_mlflow.evaluation._judging import build_judge, create_judge, judge_style_guide, warn_same_family
from agility_mlflow.evaluation._log import log_evaluation
from agility_mlflow.evaluation._planning import estimate_for, estimate_project, prepare
from agility_mlflow.evaluation._session import EvaluationSession, evaluate_into_run

__all__ = [
    "CONTEXT",
    "HUMAN_SCORE",
    "INPUT_DIGEST",
    "PlannedRun",
    "EvaluationSession",
    "EvaluationResult",
    "Project",
    "RunSummary",
    "aggregate",
    "build_judge",
    "calibrate",
    "combine",
    "create_judge",
    "estimate_for",
    "estimate_project",
    "evaluate",
    "evaluate_into_run",
    "evaluate_samples",
    "input_columns",
    "input_digest",
    "judge_input",
    "judge_style_guide",
    "log_evaluation",
    "prepare",
    "run_project",
    "score_samples",
    "warn_same_family",
]
