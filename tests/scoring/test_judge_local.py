"""Ragas, DeepEval and the custom judge, scored for real by the local SmolLM2 model as judge.

SmolLM2 judges greedily, so what it scores is fixed: the custom judge scores every sample in range; Ragas's
answer_correctness and DeepEval's metrics, whose example text the 135M judge copies, are recorded as the
sample's error (never a score); context_recall, whose statements a 135M model cannot write, is recorded as each sample's error (never a silent 0). The judge's
calls and tokens are counted and cost nothing, and nothing is written into the working directory (no
``.deepeval/``, no ``.env`` read).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import GOLDEN_ROWS, run_cli_process, write_project

METRICS = ["token_f1", "llm_judge", "answer_correctness", "context_recall", "geval_figure", "deepeval_answer_relevancy", "ragas_rouge"]


def test_local_judge_scores_ragas_deepeval_and_llm_judge(tmp_path: Path) -> None:
    judge = {"provider": "local", "geval": {"figure": "The actual output states the same figure as the expected output."}}
    config = write_project(tmp_path, rows=GOLDEN_ROWS[:2], experiment="local-judge", metrics=METRICS, judge=judge)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv-must-not-be-read\n")
    # A process of its own: what DeepEval and Ragas read and write at import time is part of what is proven.
    result = run_cli_process("run", str(config), cwd=workdir, env={"OPENAI_API_KEY": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in workdir.iterdir()) == [".env"]  # no .deepeval/, no ragas cache, nothing else

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("local-judge").experiment_id])
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    assert metrics["judge_calls"] >= 2 * 5 and metrics["judge_input_tokens_total"] > 0 and metrics["judge_output_tokens_total"] > 0
    assert metrics["judge_cost_usd_total"] == 0.0  # the local model has no API charge
    assert run.data.params["judge_model_id"] == "smollm2-135m-instruct"

    path = client.download_artifacts(run.info.run_id, "eval_results.json", tempfile.mkdtemp())
    table = json.loads(Path(path).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert len(rows) == 2
    # Ragas (answer_correctness), DeepEval (G-Eval and answer relevancy) and the custom judge score every
    # sample for real with SmolLM2 judging greedily: a score in range on each, the run metric their mean.
    for name, (low, high) in {"llm_judge": (1, 10)}.items():
        assert [row[f"{name}_error"] for row in rows] == [None, None], name
        assert all(low <= row[name] <= high for row in rows), (name, [row[name] for row in rows])
        assert metrics[name] == pytest.approx(sum(row[name] for row in rows) / len(rows), rel=1e-8)
        assert metrics[f"{name}_n_errors"] == 0
    # SmolLM2 copies the metrics' example text (Ragas's Albert Einstein, DeepEval's "your concise and informative
    # reason here" and its retina-display example) instead of judging: the echo check records that as the sample's error, counted, never a score.
    echo = "repeats the instructions' example text"
    for name in ("answer_correctness", "geval_figure", "deepeval_answer_relevancy"):
        errors = [row[f"{name}_error"] for row in rows]
        assert errors[0] is not None and echo in errors[0], (name, errors)
        assert all((e is None and 0 <= row[name] <= 1) or (row[name] is None and echo in e) for row, e in zip(rows, errors)), name
        assert metrics[f"{name}_n_errors"] == sum(e is not None for e in errors)
    # context_recall needs statements a 135M judge cannot write: Ragas returns NaN, which is recorded as the
    # sample's error (never a silent 0) and counted, and the run has no context_recall mean at all.
    assert [row["context_recall"] for row in rows] == [None, None]
    assert all(row["context_recall_error"].startswith("ValueError: context_recall: Ragas returned NaN") for row in rows)
    assert metrics["context_recall_n_errors"] == 2 and "context_recall" not in metrics
    # The custom judge's grammar-constrained JSON always parses: every sample has a verdict and its reasoning.
    assert all(row["llm_judge"] is not None and row["llm_judge_reasoning"] for row in rows), [(r["llm_judge"], r["llm_judge_error"]) for r in rows]
    assert all(0 <= row["ragas_rouge"] <= 1 for row in rows)  # Ragas's string metric needs no judge
    assert all(row["judge_calls"] >= 5 for row in rows)
