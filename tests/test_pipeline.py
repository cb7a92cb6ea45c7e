"""A two-step application: the query rewrite replays production, the answer step runs the real local model."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from statistics import median

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from tests.helpers import GOLDEN_ROWS, run_cli, write_project

REWRITES = {"q1": "revenue FY2023", "q2": "net income FY2023", "q3": "profitability FY2023"}
REWRITE_LATENCY = {"q1": 0.4, "q2": 0.9, "q3": 0.5}
ROWS = [{**row, "query_rec": REWRITES[row["sample_id"]], "query_latency": REWRITE_LATENCY[row["sample_id"]]} for row in GOLDEN_ROWS]
PROMPTS = [
    {"name": "rewrite", "template": "Rewrite as a search query: {{question}}"},
    {"name": "answer", "template": "Context: {{context}}\nSearch: {{query}}\nQuestion: {{question}}\nAnswer briefly."},
]
STEPS = [
    {"name": "rewrite", "prompt": "rewrite", "output": "query", "replay": "query_rec", "replay_latency": "query_latency"},
    {"name": "answer", "prompt": "answer"},
]


def _table(run_id: str) -> dict[str, dict]:
    path = MlflowClient().download_artifacts(run_id, "eval_results.json", tempfile.mkdtemp())
    table = json.loads(Path(path).read_text())
    return {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}


def test_replayed_and_migrated_steps_log_per_step_and_total_metrics(tmp_path: Path) -> None:
    candidate = {"name": "smol", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"max_tokens": 24}}
    config = write_project(tmp_path, rows=ROWS, experiment="pipeline", prompts=PROMPTS, steps=STEPS, candidates=[candidate])
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])}
    assert set(runs) == {"source", "smol/answer"}  # the rewrite prompt is a step, not a variant to run on its own

    for run in runs.values():
        metrics, table = run.data.metrics, _table(run.info.run_id)
        assert run.data.tags["agility.prompt"].startswith("prompts:/answer/")
        # The replayed step: the recorded outputs and latencies, exactly, and no cost (no call is made).
        assert {s: row["step.rewrite.output"] for s, row in table.items()} == REWRITES
        assert metrics["step.rewrite.latency_p50_s"] == median(REWRITE_LATENCY.values()) == 0.5
        assert metrics["step.rewrite.latency_p95_s"] == pytest.approx(float(np.percentile(list(REWRITE_LATENCY.values()), 95)))
        assert metrics["step.rewrite.cost_usd_total"] == 0.0
        # The request's latency is the steps' sum, sample by sample; its tokens and cost are the answer step's here.
        for s, row in table.items():
            assert row["latency_s"] == pytest.approx(REWRITE_LATENCY[s] + row["step.answer.latency_s"])
            assert row["input_tokens"] == row["step.answer.input_tokens"] and row["cost_usd"] == pytest.approx(row["step.answer.cost_usd"])
        assert metrics["latency_p50_s"] == pytest.approx(median(row["latency_s"] for row in table.values()))
        assert metrics["step.answer.latency_p50_s"] == pytest.approx(median(row["step.answer.latency_s"] for row in table.values()))
        assert metrics["cost_usd_total"] == pytest.approx(metrics["step.answer.cost_usd_total"])

    source, smol = _table(runs["source"].info.run_id), _table(runs["smol/answer"].info.run_id)
    assert {s: row["step.answer.latency_s"] for s, row in source.items()} == {r["sample_id"]: float(r["latency_source_llm"]) for r in GOLDEN_ROWS}
    assert runs["smol/answer"].data.metrics["cost_usd_total"] == 0.0 and runs["source"].data.metrics["cost_usd_total"] > 0
    # The local model answered the answer step with the replayed query in its prompt.
    traces = mlflow.search_traces(locations=[runs["smol/answer"].info.experiment_id], run_id=runs["smol/answer"].info.run_id, return_type="list")
    prompts = {t.data.spans[0].attributes["agility.sample_id"]: json.dumps(t.data.spans[0].inputs) for t in traces}
    assert all(f"Search: {REWRITES[s]}" in prompts[s] for s in REWRITES)
    assert all(row["output"] and row["step.answer.output"] == row["output"] for row in smol.values())


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{**STEPS[0], "replay": "no_such_column"}, STEPS[1]], "golden.csv: missing column 'no_such_column' (needed by the replayed step 'rewrite')"),
        ([{k: v for k, v in STEPS[0].items() if k not in ("replay", "replay_latency")}, STEPS[1]],
         "key 'steps': exactly one step must be left to the candidates (no replay:, no model:); found 2"),
        ([STEPS[1], STEPS[0]], "prompt 'answer' (inline): placeholder '{{query}}' has no column in"),
    ],
)
def test_bad_steps_fail_before_any_call(tmp_path: Path, steps: list[dict], message: str) -> None:
    result = run_cli("run", str(write_project(tmp_path, rows=ROWS, prompts=PROMPTS, steps=steps)))
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_sweep_runs_the_whole_pipeline(tmp_path: Path, tracking: str) -> None:
    import uuid

    candidate = {"name": "smol", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"max_tokens": 4}}
    experiment = f"pipeline-sweep-{uuid.uuid4().hex[:8]}"
    config = write_project(tmp_path, rows=ROWS, experiment=experiment, prompts=PROMPTS, steps=STEPS, candidates=[candidate],
                           sweep={"params": {"max_tokens": {"choices": [2, 4]}}, "n_trials": 2, "slices": 1, "objective": "token_f1"})
    result = run_cli("sweep", str(config), "--tracking-uri", tracking, "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--limit", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking)
    trials = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.`agility.role` = 'trial'")
    assert len(trials) == 2 and {t.info.status for t in trials} == {"FINISHED"}
    for trial in trials:
        assert trial.data.metrics["n_errors"] == 0  # the answer step read {{query}} from the replayed rewrite
        assert trial.data.tags["agility.prompt"].startswith("prompts:/answer/")  # the migrated step's prompt is what varies
        assert any(name.startswith("step.rewrite.") for name in trial.data.metrics)
