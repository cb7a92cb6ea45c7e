"""A run as the comparison sees it: its identity, its run-level metrics and, once loaded, its samples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run of the experiment.

    Attributes:
        run_id: The MLflow run id.
        name: The run name (``source``, ``CANDIDATE/PROMPT``, ``trial-N``).
        role: The ``agility.role`` tag: ``source``, ``candidate`` or ``trial``.
        candidate: The ``agility.candidate`` tag.
        prompt: The ``agility.prompt`` tag (``prompts:/NAME/N``).
        start_time: Milliseconds since the epoch.
        metrics: The run's metrics (``n_samples``, ``cost_usd_per_sample``, ``token_f1``, ...).
        params: The run's params (``provider``, ``model_id``, inference parameters, ...).
        rows: The per-sample ``eval_results.json`` rows; ``None`` until loaded.
        optimization: The ``agility.optimization`` tag of an optimization's trial (scored on samples the optimizer saw).
    """

    run_id: str
    name: str
    role: str
    candidate: str | None = None
    prompt: str | None = None
    start_time: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    rows: tuple[Mapping[str, Any], ...] | None = field(default=None, repr=False)
    optimization: str | None = None

    def with_rows(self, rows: Sequence[Mapping[str, Any]]) -> RunRecord:
        return replace(self, rows=tuple(rows))

    def scores(self, metric: str) -> dict[str, float]:
        """Per-sample values of ``metric`` by sample id, leaving out failed samples and samples the
        metric does not apply to.

        Example:
            >>> run = RunRecord("r1", "a", "candidate", rows=(
            ...     {"sample_id": "q1", "error": None, "token_f1": 0.5},
            ...     {"sample_id": "q2", "error": "timeout", "token_f1": None},
            ...     {"sample_id": 3, "error": None, "token_f1": None}))
            >>> run.scores("token_f1")
            {'q1': 0.5}
        """
        if self.rows is None:
            raise ValueError(f"run {self.run_id}: per-sample results are not loaded")
        scores = {}
        for row in self.rows:
            value = row.get(metric)
            if row.get("error") is None and _is_number(value):
                scores[str(row["sample_id"])] = float(value)
        return scores

    def rows_by_id(self) -> dict[str, Mapping[str, Any]]:
        return {str(row["sample_id"]): row for row in self.rows or ()}


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not math.isnan(value)
