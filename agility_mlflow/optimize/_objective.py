"""The optimization's objective as a per-sample score (GEPA sums scores over samples).

One metric, or ``{metric: weight}`` as in ``sweep.objective``. Run-level token, latency and cost
metrics are read per sample from their columns (``output_tokens_mean`` from ``output_tokens``), so a
weighted objective such as ``{numeric_match: 1.0, output_tokens_mean: -0.002}`` rewards shorter answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agility_mlflow.errors import InputError
from agility_mlflow.scoring import get_metric

# Run metrics that are the mean of a per-sample column.
PER_SAMPLE_COLUMNS = {
    "output_tokens_mean": "output_tokens",
    "input_tokens_mean": "input_tokens",
    "latency_mean_s": "latency_s",
    "cost_usd_per_sample": "cost_usd",
}


@dataclass(frozen=True)
class SampleObjective:
    """``{column: weight}``: a sample's score is the weighted sum of its columns (a failed sample scores 0).

    Example:
        >>> objective = parse_sample_objective({"numeric_match": 1.0, "output_tokens_mean": -0.002}, ["numeric_match"], "a.yaml")
        >>> objective.score({"error": None, "numeric_match": 1.0, "output_tokens": 50})
        0.9
        >>> objective.score({"error": "timeout", "numeric_match": None, "output_tokens": None})
        0.0
    """

    weights: Mapping[str, float]
    """Per-sample column -> weight (a lower-is-better single metric gets weight -1)."""
    names: Mapping[str, str]
    """Per-sample column -> the metric name the config used."""
    perfect: float | None
    """The best score a sample can get, when there is one (a single bounded metric)."""

    def parts(self, row: Mapping[str, Any]) -> dict[str, float]:
        """Each weighted term of the sample's score, by metric name; a metric not applicable to the sample counts 0."""
        if row.get("error") is not None:
            return {self.names[column]: 0.0 for column in self.weights}
        return {self.names[column]: weight * float(row.get(column) or 0.0) for column, weight in self.weights.items()}

    def score(self, row: Mapping[str, Any]) -> float:
        return round(sum(self.parts(row).values()), 12)


def parse_sample_objective(spec: str | Mapping[str, float] | None, metrics: Sequence[str], config_name: str) -> SampleObjective:
    """The ``optimize.objective`` of the config, checked against ``metrics:`` (exit 2 on an unknown name)."""
    where = f"{config_name}: key 'optimize.objective'"
    if spec is None:
        if not metrics:
            raise InputError(f"{where}: set an objective (no metrics: are configured)")
        spec = metrics[0]
    if isinstance(spec, str):
        column = _column(spec, metrics, where)
        higher = get_metric(spec).higher_is_better if spec in metrics else False
        perfect = _perfect(spec) if spec in metrics and higher else None
        return SampleObjective({column: 1.0 if higher else -1.0}, {column: spec}, perfect)
    if not spec:
        raise InputError(f"{where}: the weights are empty")
    columns = {_column(name, metrics, where): float(weight) for name, weight in spec.items()}
    return SampleObjective(columns, {_column(name, metrics, where): name for name in spec}, None)


def _column(name: str, metrics: Sequence[str], where: str) -> str:
    if name in metrics:
        return name
    if name in PER_SAMPLE_COLUMNS:
        return PER_SAMPLE_COLUMNS[name]
    known = ", ".join([*metrics, *PER_SAMPLE_COLUMNS])
    raise InputError(f"{where}: unknown metric '{name}' (known: {known}; a quality metric must also be in metrics:)")


def _perfect(name: str) -> float | None:
    metric = get_metric(name)
    scale = getattr(metric, "scale", None)
    return float(scale[1]) if scale else 1.0
