"""Quality metrics: each a named per-sample score, selected by name in the config's ``metrics:``.

Example:
    >>> get_metric("exact_match")("The answer is 42.", ["the answer is 42"], {})
    1.0
"""

from agility_mlflow.scoring._metric import Metric, get_metric, metric, metric_names

__all__ = ["Metric", "get_metric", "metric", "metric_names"]
