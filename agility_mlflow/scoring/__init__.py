"""Quality metrics: each a named per-sample score, selected by name in the config's ``metrics:``.

String metrics score an answer on their own; judged metrics (``llm_judge``, Ragas, DeepEval) ask the
``judge:`` model and are scored after generation by :func:`judge_rows`.

Example:
    >>> get_metric("exact_match")("The answer is 42.", ["the answer is 42"], {})
    1.0
    >>> get_metric("answer_correctness").needs_reference
    True
"""

from agility_mlflow.scoring._judge import Judge, JudgeReplyError, model_family, parse_json
from agility_mlflow.scoring._judged import JudgedMetric, JudgedScore, JudgeInput, judge_rows
from agility_mlflow.scoring._metric import Metric, get_metric, metric, metric_names

__all__ = [
    "Judge",
    "JudgeInput",
    "JudgeReplyError",
    "JudgedMetric",
    "JudgedScore",
    "Metric",
    "get_metric",
    "judge_rows",
    "metric",
    "metric_names",
    "model_family",
    "parse_json",
]
