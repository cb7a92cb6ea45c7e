"""`agility run` with a Bedrock candidate through the real boto3 client and a Bedrock-protocol server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.cache import ResponseCache
from agility_mlflow.config import RunSettings
from agility_mlflow.evaluation import run_project
from agility_mlflow.runner import Runner
from tests.bedrock_server import start_bedrock_server
from tests.helpers import GOLDEN_ROWS, run_cli, write_project

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGONLY0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-not-real")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _rows(n: int) -> list[dict]:
    base = GOLDEN_ROWS[0]
    return [{**base, "sample_id": f"s{i:03d}", "question": f"What is item {i}?", "answer_ground_truth": f"Item {i} is {i * 7}"}
            for i in range(n)]


def _answer(model_id: str, request: dict) -> str:
    question = request["messages"][-1]["content"][-1]["text"]
    number = int(question.rsplit("item ", 1)[1].split("?")[0])
    return f"Item {number} is {number * 7}"


def test_thirty_percent_throttled_run_completes_every_sample_once(aws_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_bedrock_server(responder=_answer, throttle_fraction=0.3) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        candidate = {"name": "haiku", "provider": "bedrock", "model_id": MODEL, "params": {"max_tokens": 32}}
        config = write_project(tmp_path, rows=_rows(40), candidates=[candidate],
                               prompts=[{"name": "qa-bedrock", "template": "{{question}}"}],
                               metrics=["exact_match"], run={"concurrency": 8})
        runner = Runner(RunSettings(concurrency=8), ResponseCache(), progress=False, backoff_max_s=0.05)
        summaries = {s.name: s for s in run_project(config, runner=runner)}
        throttled = server.calls - 40
    metrics = summaries["haiku"].metrics
    assert metrics["n_samples"] == 40 and metrics["n_errors"] == 0
    assert metrics["exact_match"] == 1.0  # every answer belongs to its own sample: none lost, none swapped
    assert throttled >= 12 and runner.stats.throttled == throttled
    run = MlflowClient().get_run(summaries["haiku"].run_id)
    assert run.data.params["pricing_source"] == "genai-prices"
    assert run.data.metrics["cost_usd_total"] > 0
    table = json.loads(Path(MlflowClient().download_artifacts(run.info.run_id, "eval_results.json", str(tmp_path))).read_text())
    ids = [row[0] for row in table["data"]]
    assert sorted(ids) == [f"s{i:03d}" for i in range(40)] and len(set(ids)) == 40


def test_validation_error_fails_the_configuration_at_once(aws_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_bedrock_server(model_errors={"anthropic.bad-model": "ValidationException"}) as server:
        candidate = {"name": "bad", "provider": "bedrock", "model_id": "anthropic.bad-model"}
        config = write_project(tmp_path, candidates=[candidate])
        result = run_cli("run", str(config), env={"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": server.url})
        calls = server.calls
    assert result.returncode == 1
    assert "ValidationException" in result.stderr.splitlines()[-1]
    assert calls <= 2  # at most one call per worker already in flight: no retries burned
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("test-migration").experiment_id])
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert statuses == {"source": "FINISHED", "bad/qa": "FAILED"}


def test_the_shipped_openai_to_bedrock_example_runs_as_written(aws_env: None) -> None:
    config = Path(__file__).resolve().parents[2] / "projects" / "openai-to-bedrock" / "agility.yaml"
    with start_bedrock_server(responder=lambda model_id, request: f"{model_id} says $1,234.5 million") as server:
        result = run_cli("run", str(config), "--limit", "3", env={"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": server.url})
        models = sorted({r.model_id for r in server.requests})
    assert result.returncode == 0, result.stderr
    assert models == ["us.amazon.nova-lite-v1:0", "us.anthropic.claude-3-5-haiku-20241022-v1:0"]
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("openai-to-bedrock").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"source", "claude-3-5-haiku/fin-qa", "nova-lite/fin-qa"}
    for name in ("claude-3-5-haiku/fin-qa", "nova-lite/fin-qa"):
        run = by_name[name]
        assert run.info.status == "FINISHED" and run.data.metrics["n_samples"] == 3 and run.data.metrics["n_errors"] == 0
        assert run.data.metrics["cost_usd_total"] > 0  # Bedrock prices are known offline
        assert 0 < run.data.metrics["provider_latency_p50_s"] <= run.data.metrics["latency_p95_s"] + 0.001
