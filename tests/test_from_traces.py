"""A dataset built from the traces of a small instrumented app matches them row for row."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, SpanType

from tests.helpers import run_cli

QUESTIONS = {"q1": ("What was revenue in FY2023?", "$1,577 million"), "q2": ("What was the margin?", "12.5%")}


@mlflow.trace(span_type=SpanType.CHAIN)
def support_bot(question: str, context: str) -> str:
    """The live application: one LLM call that reports its token usage, as autologging would."""
    with mlflow.start_span("chat", span_type=SpanType.CHAT_MODEL) as span:
        span.set_attribute("mlflow.chat.tokenUsage", {"input_tokens": len(question), "output_tokens": 5, "total_tokens": len(question) + 5})
    if question == "crash":
        raise RuntimeError("the application failed")
    return f"It was {QUESTIONS[next(k for k, v in QUESTIONS.items() if v[0] == question)][1]}."


def _traffic() -> list[str]:
    from agility_mlflow import tracking

    tracking.configure(None, "support-bot")  # artifacts beside the test's sqlite store, not in the repo's ./mlruns
    for question, _ in QUESTIONS.values():
        support_bot(question, context="statement text")
    with pytest.raises(RuntimeError):
        support_bot("crash", context="x")
    mlflow.flush_trace_async_logging(terminate=False)
    experiment_id = MlflowClient().get_experiment_by_name("support-bot").experiment_id
    traces = mlflow.search_traces(locations=[experiment_id], order_by=["timestamp_ms ASC"], return_type="list")
    ok = [t.info.trace_id for t in traces if str(t.info.state).endswith("OK")]
    mlflow.log_expectation(trace_id=ok[0], name="expected_response", value="$1,577 million")
    mlflow.log_feedback(trace_id=ok[0], name="correct", value=4, rationale="right figure, wordy",
                        source=AssessmentSource(source_type="HUMAN", source_id="sme@example.com"))
    return ok


def test_traces_become_a_golden_dataset_row_for_row(tmp_path: Path) -> None:
    trace_ids = _traffic()
    output = tmp_path / "golden.jsonl"
    result = run_cli("dataset-from-traces", "support-bot", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"2 samples from traces -> {output}"
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    client = MlflowClient()
    for row, trace_id, (question, figure) in zip(rows, trace_ids, QUESTIONS.values(), strict=True):
        info = client.get_trace(trace_id).info
        assert row["sample_id"] == trace_id
        assert (row["question"], row["context"], row["answer_source_llm"]) == (question, "statement text", f"It was {figure}.")
        assert row["latency_source_llm"] == info.execution_duration / 1000
        assert (row["input_token_source_llm"], row["output_token_source_llm"]) == (len(question), 5)
    assert (rows[0]["answer_ground_truth"], rows[0]["human_score_source_llm"]) == ("$1,577 million", 4)
    assert rows[0]["human_score_reasoning_source_llm"] == "right figure, wordy"
    assert rows[1]["answer_ground_truth"] is None  # no expectation on that trace: no reference, not ""


def test_an_empty_window_writes_nothing_and_says_so(tmp_path: Path) -> None:
    _traffic()
    output = tmp_path / "golden.csv"
    result = run_cli("dataset-from-traces", "support-bot", "--output", str(output), "--since", "2099-01-01")
    assert result.returncode == 2 and not output.exists()
    assert result.stderr.strip() == "error: experiment 'support-bot' has no successful traces in that window: nothing written"
    bad = run_cli("dataset-from-traces", "support-bot", "--output", str(output), "--since", "last week")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --since 'last week': not an ISO date or time (e.g. 2026-11-18 or 2026-11-18T09:00)"


def test_agility_check_runs_on_last_weeks_traffic(tmp_path: Path) -> None:
    from agility_mlflow.evaluation import run_project
    from tests.helpers import write_project

    trace_ids = _traffic()
    mlflow.log_expectation(trace_id=trace_ids[1], name="expected_response", value="12.5%")  # an SME labelled both
    golden = tmp_path / "traffic.jsonl"
    assert run_cli("dataset-from-traces", "support-bot", "--output", str(golden), "--since", "2026-01-01").returncode == 0

    smol = {"name": "smol", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"max_tokens": 16}}
    # A margin as wide as token_f1's range: whatever SmolLM2 answers, the traffic holds to the registered mean,
    # so the check passes and the test is about reading the traffic, not about the model's quality.
    config = write_project(tmp_path / "project", candidates=[smol], metrics=["token_f1"], decision={"min_samples": 2, "margin": 1.0})
    runs = {s.name: s.run_id for s in run_project(config, progress=False)}
    assert run_cli("register", str(config), "--name", "app.bot", "--run-id", runs["smol"], "--force").returncode == 0

    result = run_cli("check", "--model", "models:/app.bot@champion", "--dataset", str(golden), "--min", "token_f1=0")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("token_f1 ") and lines[0].endswith(">= 0")
    # The traffic's samples are trace ids, none of them in the registered run: held to its mean, not paired.
    assert lines[1] == ("samples since registration: 0 unchanged, 0 changed (inputs or references), 2 new; "
                        "only unchanged ones are paired with the registered run")
    assert "on 2 new or changed samples against the registered mean" in lines[2] and lines[2].endswith(": within margin 1")
    assert lines[-1].startswith("pass: ")
    client = MlflowClient()
    check_run = client.get_run(lines[-1].rsplit("check run ", 1)[1].rstrip(")"))
    assert check_run.data.tags["agility.role"] == "check" and check_run.data.metrics["n_samples"] == 2
    table = json.loads(Path(client.download_artifacts(check_run.info.run_id, "eval_results.json", str(tmp_path))).read_text())
    assert sorted(row[0] for row in table["data"]) == sorted(trace_ids)
