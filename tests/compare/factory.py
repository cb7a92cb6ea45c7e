"""Runs with known per-sample results, logged the way ``agility run`` logs them."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from agility_mlflow.scoring.stats import mean_score, run_metrics

QUALITY = ("exact_match", "token_f1")


def sample_rows(
    ids: Sequence[str],
    *,
    scores: Mapping[str, Sequence[float | None]],
    latency: Sequence[float],
    cost: float | None,
    outputs: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``eval_results.json`` rows: one per sample id, with the given scores, latency and cost."""
    rows = []
    for i, sample_id in enumerate(ids):
        error = (errors or {}).get(sample_id)
        rows.append(
            {
                "sample_id": sample_id,
                "output": None if error else (outputs or {}).get(sample_id, f"answer {sample_id}"),
                "reference": f"reference {sample_id}",
                "latency_s": None if error else latency[i],
                "ttft_s": None if error else round(latency[i] / 4, 6),
                "input_tokens": None if error else 100,
                "output_tokens": None if error else 20,
                "cost_usd": None if error else cost,
                "error": error,
                **{name: (None if error else values[i]) for name, values in scores.items()},
            }
        )
    return rows


def aggregate(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = QUALITY) -> dict[str, float]:
    """The run-level metrics ``agility run`` logs for these rows."""
    result = run_metrics(rows)
    for name in metrics:
        value = mean_score([row.get(name) for row in rows if row["error"] is None])
        if value is not None:
            result[name] = value
    return result


def log_eval_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    role: str,
    rows: Sequence[Mapping[str, Any]] | None,
    *,
    metrics: Mapping[str, float] | None = None,
    status: str | None = "FINISHED",
) -> str:
    """A run tagged like ``agility run``'s, with metrics, the ``eval_results.json`` table (when ``rows``), ended ``status``."""
    tags = {"agility.role": role, "agility.candidate": name.split("/")[0]}
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    values = dict(metrics if metrics is not None else aggregate(rows or []))
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in values.items()])
    if rows is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.log_table(run_id, pd.DataFrame(list(rows)), artifact_file="eval_results.json")
    if status:
        client.set_terminated(run_id, status=status)
    return run_id
