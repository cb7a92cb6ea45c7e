"""Tokens as providers bill them: reasoning and cached input tokens, logged per sample and per run, priced at their own rates."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.compare import read_results
from agility_mlflow.evaluation import run_project
from tests.helpers import write_project
from tests.openai_server import start_standin

PRICING = {"o4-mini": {"input": 1.10, "output": 4.40, "cached_input": 0.275}}


def _details(request: dict) -> dict:
    """OpenAI's wire format: reasoning tokens inside completion_tokens, cached tokens inside prompt_tokens."""
    return {"prompt_tokens": 2000, "completion_tokens": 300,
            "completion_tokens_details": {"reasoning_tokens": 256}, "prompt_tokens_details": {"cached_tokens": 1024}}


@pytest.mark.parametrize("stream", [True, False])
def test_openai_reasoning_and_cached_tokens_are_logged_and_priced_exactly(tmp_path: Path, stream: bool) -> None:
    with start_standin(latency_s=0.0, usage_details=_details) as server:
        candidate = {"name": "o-mini", "provider": "openai", "model_id": "o4-mini", "base_url": server.url, "stream": stream}
        config = write_project(tmp_path, candidates=[candidate], source=None, pricing=PRICING, run={"concurrency": 2, "traces": False})
        (summary,) = [s for s in run_project(config, progress=False) if s.name == "o-mini"]
    # (2000 - 1024) x 1.10 + 1024 x 0.275 + 300 x 4.40, per million tokens
    per_sample = (976 * 1.10 + 1024 * 0.275 + 300 * 4.40) / 1e6
    client = MlflowClient()
    run = client.get_run(summary.run_id)
    assert run.data.metrics["reasoning_tokens_mean"] == 256 and run.data.metrics["cached_input_tokens_mean"] == 1024
    assert run.data.metrics["cost_usd_total"] == pytest.approx(3 * per_sample, rel=1e-12)
    assert run.data.params["price_cached_input_usd_per_mtok"] == "0.275"
    rows = read_results(summary.run_id, client=client)
    assert {(r["reasoning_tokens"], r["cached_input_tokens"], r["input_tokens"]) for r in rows} == {(256, 1024, 2000)}
    assert all(r["cost_usd"] == pytest.approx(per_sample, rel=1e-12) for r in rows)


def test_cached_tokens_without_a_cached_rate_are_an_unknown_cost(tmp_path: Path) -> None:
    with start_standin(latency_s=0.0, usage_details=_details) as server:
        candidate = {"name": "private", "provider": "openai", "model_id": "my-private-model", "base_url": server.url, "stream": False}
        config = write_project(tmp_path, candidates=[candidate], source=None, pricing={"my-private-model": {"input": 1.0, "output": 2.0}},
                               run={"concurrency": 2, "traces": False})
        (summary,) = [s for s in run_project(config, progress=False) if s.name == "private"]
    assert "cost_usd_total" not in MlflowClient().get_run(summary.run_id).data.metrics  # never priced as if uncached


BEDROCK_PRICING = {"us.anthropic.claude-3-5-haiku-20241022-v1:0": {"input": 0.8, "output": 4.0, "cached_input": 0.08, "cache_write": 1.0}}


@pytest.mark.parametrize("stream", [True, False])
def test_bedrock_prompt_caching_reads_the_system_prompt_from_the_cache_at_its_rates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    from tests.bedrock_server import start_bedrock_server

    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGONLY0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-not-real")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with start_bedrock_server(responder=lambda model_id, request: "Two words") as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        candidate = {"name": "haiku", "provider": "bedrock", "model_id": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                     "prompt_caching": True, "stream": stream}
        config = write_project(tmp_path, candidates=[candidate], source=None, pricing=BEDROCK_PRICING, run={"concurrency": 1, "traces": False})
        (summary,) = [s for s in run_project(config, progress=False) if s.name == "haiku"]
        assert all(r.body["system"][-1] == {"cachePoint": {"type": "default"}} for r in server.requests)
    rows = read_results(summary.run_id, client=MlflowClient())
    system_words = len("You are a financial analyst.".split())
    # The first call writes the system prompt to the cache, the next two read it.
    assert [(r["cache_write_tokens"], r["cached_input_tokens"]) for r in rows] == [(system_words, None), (None, system_words), (None, system_words)]
    for r in rows:  # input_tokens counts every input token; each kind at its own rate
        uncached = r["input_tokens"] - system_words
        rate = 1.0 if r["cache_write_tokens"] else 0.08
        assert r["cost_usd"] == pytest.approx((uncached * 0.8 + system_words * rate + 2 * 4.0) / 1e6, rel=1e-12)
    metrics = MlflowClient().get_run(summary.run_id).data.metrics
    assert metrics["cached_input_tokens_mean"] == system_words and metrics["cache_write_tokens_mean"] == system_words
