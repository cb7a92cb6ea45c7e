"""Runs with known per-sample results, logged the way ``agility run`` logs them."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from agility_mlflow.scoring import mean_score, run_metrics

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


# The runs tests/compare/conftest.py logs once for the comparison and report tests.
N = 40
IDS = [f"s{i:02d}" for i in range(N)]
SCRIPT = "<script>alert(1)</script>"
SOURCE_EM = [1.0] * 20 + [0.0] * 20
SOURCE_F1 = [round(0.40 + 0.015 * (i % 20), 3) for i in range(N)]
SOURCE_LATENCY = [round(1.0 + 0.02 * i, 3) for i in range(N)]

BETTER_EM = [0.0] + SOURCE_EM[1:20] + [1.0] * 5 + [0.0] * 15  # s00 lost, s20-s24 won
BETTER_F1 = [0.0] + [round(s + [0.05, 0.10, -0.02, 0.08][i % 4], 3) for i, s in enumerate(SOURCE_F1)][1:]
WORSE_EM = [0.0] * 12 + [1.0] * 8 + [1.0] + [0.0] * 19  # s00-s11 lost, s20 won
WORSE_F1 = [round(s - 0.25, 3) for s in SOURCE_F1]
FEW_F1 = [round(s + (0.3 if i % 2 == 0 else -0.3), 3) for i, s in enumerate(SOURCE_F1[:10])]


def _golden_rows() -> list[dict[str, str]]:
    return [
        {"sample_id": sid, "question": f"What is item {sid}?", "context": "ctx", "answer_ground_truth": f"reference {sid}",
         "answer_source_llm": f"answer {sid}"}
        for sid in IDS
    ]
