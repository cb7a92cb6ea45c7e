"""The openai backend against a real OpenAI-compatible server: llama.cpp's, serving the same SmolLM2 model."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.backends.local import model_path
from agility_mlflow.backends.openai import OpenAIBackend
from agility_mlflow.errors import ProviderError
from agility_mlflow.evaluation import run_project
from tests.helpers import free_port, wait_http, write_project

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on 127.0.0.1 with the same SmolLM2 model."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama-server") / "server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.llama_server", "--model", str(model_path("smollm2-135m-instruct")),
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--model_alias", "smollm2"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", process=process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_openai_backend_streams_against_a_real_server(openai_server: str) -> None:
    backend = OpenAIBackend("smollm2", base_url=openai_server)
    generation = backend.generate(MESSAGES, {"temperature": 0.0, "max_tokens": 16})
    assert generation.text.strip()
    assert 0 < generation.ttft_s <= generation.latency_s
    assert generation.finish_reason in {"stop", "length"}


def test_openai_backend_without_streaming_reports_usage(openai_server: str) -> None:
    backend = OpenAIBackend("smollm2", base_url=openai_server, stream=False)
    generation = backend.generate(MESSAGES, {"temperature": 0.0, "max_tokens": 16})
    assert generation.ttft_s is None
    assert generation.input_tokens > 10 and 0 < generation.output_tokens <= 16


def test_openai_backend_client_errors_are_not_retried(openai_server: str) -> None:
    backend = OpenAIBackend("smollm2", base_url=openai_server.replace("/v1", "/nope"))
    with pytest.raises(ProviderError, match="NotFoundError"):
        backend.generate(MESSAGES, {"max_tokens": 4})


def test_openai_candidate_in_a_project_run(openai_server: str, tmp_path: Path) -> None:
    candidate = {"name": "served", "provider": "openai", "model_id": "smollm2", "base_url": openai_server,
                 "stream": False, "params": {"max_tokens": 8}, "api_key": "sk-not-a-real-key"}
    config = write_project(tmp_path, candidates=[candidate], pricing={"smollm2": {"input": 1.0, "output": 2.0}})
    summaries = {s.name: s for s in run_project(config, progress=False)}
    metrics = summaries["served"].metrics
    assert metrics["n_errors"] == 0
    run = MlflowClient().get_run(summaries["served"].run_id)
    assert run.data.params["pricing_source"] == "config"
    expected = metrics["input_tokens_mean"] * 1.0 / 1e6 + metrics["output_tokens_mean"] * 2.0 / 1e6
    assert metrics["cost_usd_per_sample"] == pytest.approx(expected)
