"""A model without a known price: cost is unknown (no cost metrics, a warning), never $0."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from bench.standin_server import start_standin
from tests.helpers import run_cli, write_project


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
