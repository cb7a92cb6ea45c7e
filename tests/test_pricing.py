"""A model without a known price: cost is unknown (no cost metrics, a warning), never $0."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.pricing import Price, cost_usd, lookup_price
from tests.helpers import run_cli, write_project
from tests.openai_server import start_standin


def test_unknown_price_is_reported_as_unknown(tmp_path: Path) -> None:
    with start_standin(latency_s=0.0) as server:
        candidate = {"name": "private", "provider": "openai", "model_id": "acme-private-llm-7", "base_url": server.url, "api_key": "k"}
        config = write_project(tmp_path, candidates=[candidate])
        result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    assert "WARNING: no price known for openai model 'acme-private-llm-7': cost is reported as unknown" in result.stderr
    assert "unknown" in next(line for line in result.stdout.splitlines() if line.startswith("private"))
    client = MlflowClient()
    run = next(r for r in client.search_runs([client.get_experiment_by_name("test-migration").experiment_id])
               if r.info.run_name == "private/qa")
    assert run.data.params["pricing_source"] == "unknown"
    assert "cost_usd_total" not in run.data.metrics and "cost_usd_per_sample" not in run.data.metrics
    assert run.data.metrics["input_tokens_mean"] > 0  # tokens were measured; only the price is missing


def test_prices_come_from_overrides_then_catalogs() -> None:
    assert lookup_price("openai", "gpt-4o-mini", {"gpt-4o-mini": {"input": 1.0, "output": 2.0}}) == Price(1.0, 2.0, "config")
    catalog = lookup_price("openai", "gpt-4o-mini", {})
    assert catalog.source == "genai-prices" and (catalog.input_per_mtok, catalog.output_per_mtok) == (0.15, 0.6)
    profile = lookup_price("bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0", {})
    assert profile.source == "genai-prices" and profile.input_per_mtok > 0
    assert lookup_price("local", "smollm2-135m-instruct", {}) == Price(0.0, 0.0, "local (no API charge)")
    assert lookup_price("openai", "my-private-finetune-xyz", {}) is None


def test_cost_of_a_call() -> None:
    price = Price(0.15, 0.60, "genai-prices")
    assert cost_usd(price, 1000, 500) == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    assert cost_usd(None, 1000, 500) is None
    assert cost_usd(price, None, 500) is None
