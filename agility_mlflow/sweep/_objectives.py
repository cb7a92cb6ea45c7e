"""What a sweep optimizes: objectives with their directions, and constraints on run metrics."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from agility_mlflow.errors import InputError
from agility_mlflow.scoring import higher_is_better

_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.]*)\s*(?P<op><=|>=)\s*"
    r"(?:(?P<source>source)\s*(?:(?P<sign>[+-])\s*(?P<offset>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?))?|(?P<value>[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?))\s*$"
)

# Optuna's names for a study direction.
Direction = Literal["minimize", "maximize"]


def direction(metric: str) -> Direction:
    """``minimize`` for latency, time to first token, tokens, cost and errors; a quality metric's own direction otherwise.

    Example:
        >>> direction("cost_usd_per_sample"), direction("token_f1")
        ('minimize', 'maximize')
    """
    try:
        return "maximize" if higher_is_better(metric) else "minimize"
    except InputError:
        raise InputError(f"sweep.objective: unknown metric '{metric}'") from None


@dataclass(frozen=True)
class Objective:
    """One or more run metrics to optimize; with ``weights``, their weighted sum (maximized).

    Example:
        >>> objective = parse_objective({"token_f1": 1.0, "cost_usd_total": -10.0}, ["token_f1"])
        >>> objective.values({"token_f1": 0.5, "cost_usd_total": 0.01})
        [0.4]
    """

    metrics: tuple[str, ...]
    directions: tuple[Direction, ...]
    weights: tuple[float, ...] | None = None

    @property
    def is_multi(self) -> bool:
        return len(self.directions) > 1

    def values(self, run_metrics: Mapping[str, float]) -> list[float]:
        missing = [m for m in self.metrics if m not in run_metrics]
        if missing:
            raise KeyError(f"the trial has no value for objective metric '{missing[0]}' (is its cost unknown?)")
        if self.weights is not None:
            return [sum(w * run_metrics[m] for m, w in zip(self.metrics, self.weights))]
        return [run_metrics[m] for m in self.metrics]


def parse_objective(spec: str | Sequence[str] | Mapping[str, float] | None, config_metrics: Sequence[str]) -> Objective:
    """The sweep's objective from the config: a metric, a list of metrics, or ``{metric: weight}``."""
    if spec is None:
        if not config_metrics:
            raise InputError("sweep.objective: set an objective (no metrics: are configured)")
        spec = config_metrics[0]
    if isinstance(spec, str):
        return Objective((spec,), (direction(spec),))
    if isinstance(spec, Mapping):
        for metric in spec:
            direction(metric)  # validates the name
        return Objective(tuple(spec), ("maximize",), tuple(float(w) for w in spec.values()))
    metrics = tuple(spec)
    if not metrics:
        raise InputError("sweep.objective: the list of objectives is empty")
    return Objective(metrics, tuple(direction(m) for m in metrics))


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``, the bound a number or the source's value plus an offset.

    Example:
        >>> c = parse_constraint("token_f1 >= source - 0.02", 0)
        >>> c.violation({"token_f1": 0.50}, {"token_f1": 0.55})
        0.03...
    """

    metric: str
    op: str
    value: float | None
    source_offset: float | None
    text: str

    @property
    def uses_source(self) -> bool:
        return self.source_offset is not None

    def bound(self, source_metrics: Mapping[str, float] | None) -> float:
        if self.source_offset is None:
            assert self.value is not None
            return self.value
        if not source_metrics or self.metric not in source_metrics:
            raise InputError(f"sweep.constraints: '{self.text}' needs the source's '{self.metric}', which is unknown")
        return source_metrics[self.metric] + self.source_offset

    def violation(self, run_metrics: Mapping[str, float], source_metrics: Mapping[str, float] | None) -> float:
        """Optuna's convention: a value <= 0 is feasible. A missing metric counts as violated."""
        if self.metric not in run_metrics:
            return 1.0
        bound = self.bound(source_metrics)
        value = run_metrics[self.metric]
        return value - bound if self.op == "<=" else bound - value


def parse_constraint(text: str, index: int) -> Constraint:
    match = _CONSTRAINT.match(text)
    if not match:
        raise InputError(
            f"sweep.constraints[{index}]: cannot read '{text}' (expected 'METRIC <= NUMBER' or 'METRIC >= source - NUMBER')"
        )
    offset = None
    if match["source"]:
        offset = float(match["offset"] or 0.0) * (-1 if match["sign"] == "-" else 1)
    value = float(match["value"]) if match["value"] is not None else None
    return Constraint(match["metric"], match["op"], value, offset, text.strip())
