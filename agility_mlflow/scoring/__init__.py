"""Quality metrics: each a named per-sample score, selected by name in the config's ``metrics:``.

Every metric is a :class:`Scorer`: it states what it needs (a reference, a context, a judge) and
scores one sample. String metrics score an answer on their own; judged metrics (``llm_judge``, Ragas,
DeepEval) are built with the ``judge:`` model (``get_metric(name, judge=judge)``) and are scored after
generation by :func:`judge_rows`.

Example:
    >>> get_metric("exact_match")("The answer is 42.", ["the answer is 42"], {})
    1.0
    >>> get_metric("answer_correctness").needs_reference
    True
"""

from agility_mlflow.scoring._aggregates import mean_score, run_metrics
from agility_mlflow.scoring._calibration import JUDGE_SCALE, agreement
from agility_mlflow.scoring._common import Number, numbers
from agility_mlflow.scoring._deepeval import GEVAL_PREFIX
from agility_mlflow.scoring._embeddings import Embedder
from agility_mlflow.scoring._judge_model import Judge, JudgeReplyError, JudgeUsage, current_usage, model_family, parse_json
from agility_mlflow.scoring._judged_metric import JudgedMetric, RowJudge, judge_metrics, judge_rows
from agility_mlflow.scoring._match import numeric_match
from agility_mlflow.scoring._metric import Metric, get_metric, higher_is_better, metric, metric_names
from agility_mlflow.scoring._scorer import JudgedScore, JudgeInput, Scorer

__all__ = [
    "Embedder",
    "GEVAL_PREFIX",
    "JUDGE_SCALE",
    "Judge",
    "JudgeInput",
    "JudgeReplyError",
    "JudgeUsage",
    "JudgedMetric",
    "JudgedScore",
    "Metric",
    "Number",
    "Scorer",
    "agreement",
    "current_usage",
    "get_metric",
    "higher_is_better",
    "judge_metrics",
    "judge_rows",
    "RowJudge",
    "mean_score",
    "metric",
    "metric_names",
    "model_family",
    "numbers",
    "numeric_match",
    "parse_json",
    "run_metrics",
]
