"""The contract every backend keeps, run over each provider: replay, openai and bedrock (the real SDK clients
against their stand-in servers), local (the real SmolLM2) and the fake the unit tests use.

The runner, the cache, the scorers and the tracking code rely on these and nothing else; a provider's own
request format, streaming and error mapping are tested in its own module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agility_mlflow.backends import Backend, Generation
from agility_mlflow.cache import ResponseCache
from agility_mlflow.config import RunSettings
from agility_mlflow.dataset import load_dataset
from agility_mlflow.runner import Request, Runner
from tests.bedrock_server import start_bedrock_server
from tests.fake_backend import FakeBackend
from tests.helpers import GOLDEN_ROWS, write_csv
from tests.openai_server import start_standin

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}]
PARAMS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8}


@pytest.fixture(scope="module")
def row(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A golden row as the dataset hands it out (numbers converted); only replay reads it."""
    return dict(load_dataset(write_csv(tmp_path_factory.mktemp("golden") / "golden.csv", GOLDEN_ROWS)).rows[0])


@dataclass
class Provider:
    backend: Backend
    config_name: str  # the `provider:` value that selects it in a config


@pytest.fixture(scope="module", params=["replay", "openai", "bedrock", "local", "fake"])
def provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    """Each backend once per module (its server, client or model weights are set up once)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _provider(request.param, monkeypatch)


def _provider(name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Provider]:
    if name == "replay":
        from agility_mlflow.backends.replay import ReplayBackend

        yield Provider(ReplayBackend("gpt-4o-mini"), "replay")
    elif name == "openai":
        from agility_mlflow.backends.openai import OpenAIBackend

        with start_standin(latency_s=0.0) as server:
            backend = OpenAIBackend("standin", base_url=server.url, api_key="sk-test")
            yield Provider(backend, "openai")
            backend.close()
    elif name == "bedrock":
        from agility_mlflow.backends.bedrock import BedrockBackend

        for variable, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                                "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():
            monkeypatch.setenv(variable, value)
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK"):
            monkeypatch.delenv(variable, raising=False)
        with start_bedrock_server() as server:
            monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
            backend = BedrockBackend("anthropic.claude-3-haiku-20240307-v1:0")
            yield Provider(backend, "bedrock")
            backend.close()
    elif name == "local":
        from agility_mlflow.backends.local import LocalBackend

        backend = LocalBackend("smollm2-135m-instruct")
        yield Provider(backend, "local")
        backend.close()
    else:
        yield Provider(FakeBackend("Paris."), "fake")


def test_a_chat_gets_a_generation_with_measured_or_missing_numbers(provider: Provider, row: dict[str, Any]) -> None:
    generation = provider.backend.generate(MESSAGES, PARAMS, sample=row)
    assert isinstance(generation, Generation)
    assert isinstance(generation.text, str) and generation.text.strip()
    assert isinstance(generation.finish_reason, str) and generation.finish_reason
    # Not measured is None, never 0; measured is a real number of the right kind.
    assert generation.latency_s is None or (isinstance(generation.latency_s, float) and generation.latency_s >= 0)
    assert generation.ttft_s is None or 0 <= generation.ttft_s <= generation.latency_s
    for tokens in (generation.input_tokens, generation.output_tokens):
        assert tokens is None or (isinstance(tokens, int) and tokens > 0)


def test_a_generation_survives_the_cache_as_json(provider: Provider, row: dict[str, Any]) -> None:
    generation = provider.backend.generate(MESSAGES, PARAMS, sample=row)
    assert Generation.from_dict(json.loads(json.dumps(generation.to_dict()))) == generation


def test_the_same_request_at_temperature_zero_gets_the_same_text(provider: Provider, row: dict[str, Any]) -> None:
    backend = provider.backend
    assert backend.generate(MESSAGES, PARAMS, sample=row).text == backend.generate(MESSAGES, PARAMS, sample=row).text


def test_identity_names_the_provider_model_and_what_else_changes_the_answer(provider: Provider, row: dict[str, Any]) -> None:
    backend = provider.backend
    assert backend.provider == provider.config_name
    assert backend.model_id
    identity: Any = backend.cache_identity()
    assert json.loads(json.dumps(identity, sort_keys=True)) == dict(identity)  # part of every cache key: plain JSON


def test_the_runner_calls_it_once_per_sample_and_caches_what_it_may(provider: Provider, row: dict[str, Any], tmp_path: Any) -> None:
    backend = provider.backend
    requests = [Request(f"q{i}", [*MESSAGES[:1], {"role": "user", "content": f"Question {i}?"}], row) for i in range(2)]
    settings = RunSettings(concurrency=2)
    first = Runner(settings, ResponseCache(tmp_path / "cache"), progress=False).run(backend, PARAMS, requests)
    assert [(o.sample_id, o.error) for o in first] == [("q0", None), ("q1", None)]
    second_runner = Runner(settings, ResponseCache(tmp_path / "cache"), progress=False)
    second = second_runner.run(backend, PARAMS, requests)
    assert [o.generation for o in second] == [o.generation for o in first]
    assert second_runner.stats.cache_hits == (2 if backend.cacheable else 0)
    assert second_runner.stats.calls == (0 if backend.cacheable else 2)
