"""A golden (or monitoring) dataset from the MLflow traces of the live application.

Each successful trace becomes one row: the root span's inputs become template variables, its output the
source model's answer (``answer_source_llm``) with the trace's latency and token usage, an
``expected_response`` expectation the ground truth, and a human feedback score the human score. The
file is then used like any golden dataset: ``agility run``, or ``agility check --dataset`` on last
week's real traffic.

Example:
    >>> frame = dataset_from_traces("support-bot", since="2026-11-18")  # doctest: +SKIP
    >>> list(frame.columns)[:3]  # doctest: +SKIP
    ['sample_id', 'question', 'answer_source_llm']
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from agility_mlflow.errors import InputError

GROUND_TRUTH_EXPECTATION = "expected_response"
"""The expectation name MLflow's own evaluation uses for a reference answer."""


def dataset_from_traces(
    experiment: str,
    *,
    since: str | None = None,
    until: str | None = None,
    filter_string: str | None = None,
    max_results: int | None = None,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """One row per successful trace of ``experiment``, oldest first.

    Args:
        experiment: The experiment name (or id) the application logs its traces to.
        since, until: An ISO date or time (UTC when no zone is given); the window is ``[since, until)``.
        filter_string: Extra ``mlflow.search_traces`` filter, e.g. ``tags.env = 'prod'`` (joined with AND).
        max_results: At most this many traces (the newest are not preferred: the order is by time).
    """
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    experiment_id = _experiment_id(experiment)
    clauses = [c for c in (filter_string,) if c]
    if since:
        clauses.append(f"trace.timestamp_ms >= {_epoch_ms(since, '--since')}")
    if until:
        clauses.append(f"trace.timestamp_ms < {_epoch_ms(until, '--until')}")
    traces = mlflow.search_traces(
        locations=[experiment_id],
        filter_string=" AND ".join(clauses) or None,
        max_results=max_results,
        order_by=["timestamp_ms ASC"],
        return_type="list",
    )
    rows = [_row(trace) for trace in traces if str(trace.info.state) in {"OK", "TraceState.OK"}]
    return pd.DataFrame(rows)


def write_dataset(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as ``.jsonl``, ``.csv`` or ``.parquet`` (by the suffix)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise InputError(f"--output {path.name}: use a .jsonl, .csv or .parquet file name")
    return path


def _experiment_id(experiment: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        try:
            found = client.get_experiment(experiment)
        except Exception:  # noqa: BLE001 - any lookup failure means "no such experiment"
            found = None
    if found is None:
        raise InputError(f"experiment '{experiment}' not found in the tracking store")
    return found.experiment_id


def _epoch_ms(text: str, option: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} '{text}': not an ISO date or time (e.g. 2026-11-18 or 2026-11-18T09:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _row(trace: Any) -> dict[str, Any]:
    info = trace.info
    row: dict[str, Any] = {"sample_id": info.trace_id}
    row.update(_variables(_json(trace.data.request)))
    row["answer_source_llm"] = _answer(_json(trace.data.response))
    row["latency_source_llm"] = info.execution_duration / 1000 if info.execution_duration is not None else None
    usage = info.token_usage or {}
    row["input_token_source_llm"] = usage.get("input_tokens")
    row["output_token_source_llm"] = usage.get("output_tokens")
    for assessment in info.assessments or []:
        if assessment.expectation is not None and assessment.name == GROUND_TRUTH_EXPECTATION:
            row["answer_ground_truth"] = _text(assessment.expectation.value)
        elif assessment.feedback is not None and str(assessment.source.source_type) == "HUMAN":
            row["human_score_source_llm"] = assessment.feedback.value
            row["human_score_reasoning_source_llm"] = assessment.rationale
    return row


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _variables(inputs: Any) -> dict[str, str]:
    """Template variables from the root span's inputs: its arguments, or the last user message of a chat."""
    if isinstance(inputs, dict) and isinstance(inputs.get("messages"), list):
        users = [m.get("content") for m in inputs["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        return {"question": _text(users[-1])} if users else {}
    if isinstance(inputs, dict):
        return {str(key): _text(value) for key, value in inputs.items()}
    return {"question": _text(inputs)} if inputs is not None else {}


def _answer(output: Any) -> str | None:
    """The answer text: a string output, an OpenAI-style completion, or the output as JSON."""
    if output is None or isinstance(output, str):
        return output
    if isinstance(output, dict) and output.get("choices"):
        message = output["choices"][0].get("message") or {}
        return _text(message.get("content"))
    return _text(output)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


__all__ = ["GROUND_TRUTH_EXPECTATION", "dataset_from_traces", "write_dataset"]
