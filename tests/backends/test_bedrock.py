"""BedrockBackend through the real boto3 client against the Bedrock look-alike in tests/bedrock_server.py."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from agility_mlflow.backends.bedrock import BedrockBackend
from agility_mlflow.errors import ProviderError, RetryableError
from tests.bedrock_server import DEFAULT_ANSWER, BedrockServer, start_bedrock_server

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
QUESTION = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is six times seven?"}]
PARAMS = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "stop": ["\n\n"]}


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and no real AWS configuration, so nothing can reach AWS."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_BEARER_TOKEN_BEDROCK", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bedrock(monkeypatch: pytest.MonkeyPatch) -> Iterator[BedrockServer]:
    with start_bedrock_server() as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        yield server


@pytest.mark.parametrize("stream", [True, False])
def test_answers_with_tokens_and_latency(bedrock: BedrockServer, stream: bool) -> None:
    generation = BedrockBackend(MODEL, stream=stream).generate(QUESTION, PARAMS)
    assert generation.text == DEFAULT_ANSWER
    assert generation.finish_reason == "end_turn"
    assert generation.input_tokens == 7  # the server counts words: 2 system + 5 user
    assert generation.output_tokens == len(DEFAULT_ANSWER.split())
    assert generation.latency_s is not None and generation.latency_s > 0
    if stream:
        assert generation.ttft_s is not None and 0 < generation.ttft_s <= generation.latency_s
    else:
        assert generation.ttft_s is None
    assert bedrock.requests[0].operation == ("converse-stream" if stream else "converse")
    # Bedrock's own latencyMs (the server sends its time + 1 ms) is kept beside the wall time
    assert generation.provider_latency_s is not None and 0.001 <= generation.provider_latency_s <= generation.latency_s + 0.001


def test_time_to_first_token_includes_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    with start_bedrock_server(delay_s=0.2) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        generation = BedrockBackend(MODEL).generate(QUESTION, PARAMS)
    assert generation.ttft_s is not None and 0.2 <= generation.ttft_s <= generation.latency_s
    assert generation.provider_latency_s is not None and generation.provider_latency_s >= 0.2


def test_request_carries_system_prompt_inference_config_and_extra_fields(bedrock: BedrockServer) -> None:
    BedrockBackend(MODEL).generate(QUESTION, {**PARAMS, "seed": 7, "extra": {"top_k": 50}})
    body = bedrock.requests[0].body
    assert body["system"] == [{"text": "Answer briefly."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "What is six times seven?"}]}]
    assert body["inferenceConfig"] == {"temperature": 0.2, "topP": 0.9, "maxTokens": 64, "stopSequences": ["\n\n"]}
    assert body["additionalModelRequestFields"] == {"top_k": 50}
    assert "seed" not in str(body)


def test_top_p_of_one_is_not_sent(bedrock: BedrockServer) -> None:
    BedrockBackend(MODEL).generate(QUESTION, {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8})
    assert bedrock.requests[0].body["inferenceConfig"] == {"temperature": 0.0, "maxTokens": 8}


def test_consecutive_turns_of_one_role_are_merged(bedrock: BedrockServer) -> None:
    messages = [{"role": "user", "content": "Context: 42."}, {"role": "user", "content": "Question?"}]
    BedrockBackend(MODEL).generate(messages, PARAMS)
    assert bedrock.requests[0].body["messages"] == [
        {"role": "user", "content": [{"text": "Context: 42."}, {"text": "Question?"}]}
    ]


@pytest.mark.parametrize("model_id", [PROFILE, ARN])
@pytest.mark.parametrize("stream", [True, False])
def test_profiles_and_arns_route_as_model_ids(bedrock: BedrockServer, model_id: str, stream: bool) -> None:
    BedrockBackend(model_id, stream=stream).generate(QUESTION, PARAMS)
    request = bedrock.requests[0]
    assert request.model_id == model_id
    assert request.path == f"/model/{quote(model_id, safe='')}/{request.operation}"


def test_requests_are_signed_with_sigv4(bedrock: BedrockServer) -> None:
    BedrockBackend(MODEL).generate(QUESTION, PARAMS)
    headers = {name.lower(): value for name, value in bedrock.requests[0].headers.items()}
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/bedrock/aws4_request" in headers["authorization"]
    assert "x-amz-date" in headers


def test_endpoint_and_region_make_the_cache_identity(bedrock: BedrockServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert BedrockBackend(MODEL).cache_identity() == {"region": "us-east-1", "endpoint_url": bedrock.url}
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert BedrockBackend(MODEL).cache_identity()["region"] == "eu-west-3"
    assert BedrockBackend(MODEL, region="ap-south-1").cache_identity()["region"] == "ap-south-1"
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    assert BedrockBackend(MODEL, region="eu-west-1").cache_identity()["endpoint_url"] == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com"
    )


@pytest.mark.parametrize("stream", [True, False])
def test_throttling_is_retryable_and_botocore_does_not_retry(monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    with start_bedrock_server(throttle_fraction=1.0) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        with pytest.raises(RetryableError, match="ThrottlingException: Too many requests") as caught:
            BedrockBackend(MODEL, stream=stream).generate(QUESTION, PARAMS)
        assert caught.value.throttled
        assert server.calls == 1


@pytest.mark.parametrize(
    ("code", "retryable", "throttled"),
    [
        ("ValidationException", False, False),
        ("AccessDeniedException", False, False),
        ("ServiceUnavailableException", True, True),
        ("ModelNotReadyException", True, False),
        ("InternalServerException", True, False),
        ("ModelTimeoutException", True, False),
    ],
)
def test_error_codes_map_to_retryable_or_provider_errors(
    monkeypatch: pytest.MonkeyPatch, code: str, retryable: bool, throttled: bool
) -> None:
    with start_bedrock_server(model_errors={MODEL: code}) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        with pytest.raises(RetryableError if retryable else ProviderError, match=f"{code}: {code} for model") as caught:
            BedrockBackend(MODEL).generate(QUESTION, PARAMS)
        assert getattr(caught.value, "throttled", False) is throttled
        assert server.calls == 1


def test_validation_error_keeps_the_provider_message_and_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    with start_bedrock_server(model_errors={MODEL: "ValidationException"}) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        with pytest.raises(ProviderError) as caught:
            BedrockBackend(MODEL, stream=False).generate(QUESTION, PARAMS)
    assert str(caught.value) == f"{MODEL}: ValidationException: ValidationException for model {MODEL}"
    assert "testing" not in str(caught.value) and "AWS4" not in str(caught.value)


def test_unknown_model_is_a_provider_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with start_bedrock_server(known_models={MODEL}) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        with pytest.raises(ProviderError, match="ResourceNotFoundException: Model no.such-model not found"):
            BedrockBackend("no.such-model").generate(QUESTION, PARAMS)
        assert BedrockBackend(MODEL).generate(QUESTION, PARAMS).text == DEFAULT_ANSWER


@pytest.mark.parametrize(
    ("how", "throttled"),
    [("close", False), ("end", False), ("modelStreamErrorException", False), ("throttlingException", True)],
)
def test_a_stream_broken_mid_answer_is_retryable(monkeypatch: pytest.MonkeyPatch, how: str, throttled: bool) -> None:
    with start_bedrock_server(stream_break_after=3, stream_break=how) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        backend = BedrockBackend(MODEL)
        with pytest.raises(RetryableError) as caught:
            backend.generate(QUESTION, PARAMS)
        assert caught.value.throttled is throttled
        server.stream_break_after = None  # the backend's client is still usable after a broken stream
        assert backend.generate(QUESTION, PARAMS).text == DEFAULT_ANSWER


def test_an_unreachable_endpoint_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    with start_bedrock_server() as server:
        url = server.url
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", url)  # the server is gone: connection refused
    with pytest.raises(RetryableError, match="EndpointConnectionError"):
        BedrockBackend(MODEL, timeout_s=2).generate(QUESTION, PARAMS)


def test_missing_credentials_are_a_provider_error(bedrock: BedrockServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe 169.254.169.254
    with pytest.raises(ProviderError, match="NoCredentialsError"):
        BedrockBackend(MODEL).generate(QUESTION, PARAMS)
    assert bedrock.calls == 0


@pytest.mark.parametrize("stream", [True, False])
def test_a_read_timeout_is_retryable(monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    with start_bedrock_server(delay_s=1.0) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        with pytest.raises(RetryableError, match="ReadTimeoutError"):
            BedrockBackend(MODEL, stream=stream, timeout_s=0.2).generate(QUESTION, PARAMS)
        assert server.calls == 1
