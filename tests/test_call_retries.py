"""One retry layer for every call: broken OpenAI-compatible streams and embeddings go through the runner.

Against a real MLflow server, with the real ``openai`` client talking to an OpenAI-protocol stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from agility_mlflow.evaluation import run_project
from tests.helpers import GOLDEN_ROWS, write_project
from tests.openai_server import StandinServer, start_standin


def _answer(request: dict[str, Any]) -> str:
    question = str(request["messages"][-1]["content"]).split("Question: ")[-1].split("\n")[0]
    return f"About {question.lower()} I cannot say."


@pytest.fixture
def flaky() -> Iterator[StandinServer]:
    with start_standin(latency_s=0.0, answer=_answer, break_streams=1) as server:
        yield server


def _rows(client: MlflowClient, run_id: str, directory: Path) -> list[dict[str, Any]]:
    table = json.loads(Path(client.download_artifacts(run_id, "eval_results.json", str(directory))).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def test_a_stream_broken_mid_answer_is_retried_not_recorded_as_failed(tracking: str, flaky: StandinServer, tmp_path: Path) -> None:
    base_url = flaky.url
    candidate = {"name": "streamed", "provider": "openai", "model_id": "standin", "base_url": base_url}
    config = write_project(tmp_path, candidates=[candidate], metrics=["token_f1"], pricing={"standin": {"input": 1.0, "output": 1.0}})
    summaries = {s.name: s for s in run_project(config, tracking_uri=tracking, progress=False)}
    assert (flaky.broken_streams, flaky.calls) == (1, 4)  # one answer dropped after its first chunk, asked again
    client = MlflowClient(tracking)
    run = client.get_run(summaries["streamed"].run_id)
    assert run.data.metrics["n_errors"] == 0 and run.data.metrics["n_samples"] == 3
    rows = _rows(client, run.info.run_id, tmp_path)
    assert [row["output"] for row in rows] == [_answer({"messages": [{"content": f"Question: {r['question']}"}]}) for r in GOLDEN_ROWS]
    assert {row["error"] for row in rows} == {None}


def test_embeddings_are_cached_retried_and_priced_with_the_judge(tracking: str, flaky: StandinServer, tmp_path: Path) -> None:
    base_url = flaky.url
    judge = {"provider": "openai", "model_id": "standin-judge", "base_url": base_url,
             "embeddings": {"provider": "openai", "model_id": "standin-embed", "base_url": base_url}}
    pricing = {"standin-judge": {"input": 1.0, "output": 1.0}, "standin-embed": {"input": 0.5, "output": 0.0}}
    config = write_project(tmp_path, metrics=["semantic_similarity"], judge=judge, pricing=pricing)
    (source,) = run_project(config, tracking_uri=tracking, progress=False)
    texts = [t for row in GOLDEN_ROWS for t in (row["answer_ground_truth"], row["answer_source_llm"])]
    assert flaky.embedding_calls == len(set(texts)) == 5  # "Yes" twice: the second from the runner's cache
    metrics = MlflowClient(tracking).get_run(source.run_id).data.metrics
    tokens = sum(len(t.split()) for t in texts)
    assert (metrics["judge_calls"], metrics["judge_cache_hits"], metrics["judge_input_tokens_total"]) == (6, 1, tokens)
    assert metrics["judge_cost_usd_total"] == pytest.approx(tokens * 0.5 / 1e6)
    assert metrics["semantic_similarity_n_errors"] == 0
    # Run again: every embedding comes from the cache, none from the endpoint; usage is still counted.
    (again,) = run_project(config, tracking_uri=tracking, progress=False)
    assert flaky.embedding_calls == 5
    rerun = MlflowClient(tracking).get_run(again.run_id).data.metrics
    assert (rerun["judge_calls"], rerun["judge_cache_hits"], rerun["semantic_similarity"]) == (6, 6, metrics["semantic_similarity"])
