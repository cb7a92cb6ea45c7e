"""Amazon Bedrock through the Converse and ConverseStream APIs of boto3's ``bedrock-runtime`` client.

One request shape serves every Bedrock chat model: system messages go to ``system``, the turns to
``messages``, the inference parameters to ``inferenceConfig`` and anything model-specific
(``params["extra"]``, e.g. ``{"top_k": 50}``) to ``additionalModelRequestFields``. The model id is passed
through as is, so base model ids, cross-region inference profiles (``us.anthropic...``) and
provisioned-throughput ARNs all work.

Credentials come from boto3's standard chain (environment, profile, SSO, instance role). The region is
the ``region`` argument, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` or the profile's, else
``us-east-1``. botocore itself honours ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` (and ``AWS_ENDPOINT_URL``) to
point the client at another endpoint, such as a VPC endpoint or a test server.

botocore's own retries are switched off: the runner's retry layer is the only one, so retries never
multiply and throttling reaches the runner's adaptive concurrency at once.

Latency: ``Generation.latency_s`` is the wall time the caller waited, measured on this side;
``Generation.provider_latency_s`` is Bedrock's own ``metrics.latencyMs`` (its time, without the network).

Example:
    The request a chat turns into:

    >>> request = converse_request(
    ...     "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    ...     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    ...     {"temperature": 0.0, "top_p": 1.0, "max_tokens": 16, "stop": ["\\n\\n"], "extra": {"top_k": 5}},
    ... )
    >>> request["system"], request["messages"]
    ([{'text': 'Be brief.'}], [{'role': 'user', 'content': [{'text': '2+2?'}]}])
    >>> request["inferenceConfig"], request["additionalModelRequestFields"]
    ({'temperature': 0.0, 'maxTokens': 16, 'stopSequences': ['\\n\\n']}, {'top_k': 5})

    Calling a model (needs AWS credentials or a Bedrock-compatible endpoint):

    >>> backend = BedrockBackend("us.anthropic.claude-3-5-haiku-20241022-v1:0", region="us-east-1")  # doctest: +SKIP
    >>> backend.generate([{"role": "user", "content": "2+2? Answer with the number."}], {"max_tokens": 8})  # doctest: +SKIP
    Generation(text='4', latency_s=0.61, ttft_s=0.43, input_tokens=17, output_tokens=5, finish_reason='end_turn')
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypedDict

from agility_mlflow.backends._base import Backend, Generation, Message, Stopwatch, sampling
from agility_mlflow.errors import AgilityError, ProviderError, RetryableError

DEFAULT_REGION = "us-east-1"

# Error codes from the bedrock-runtime service model. Bedrock answers 503 ServiceUnavailable when it
# is out of capacity, so the runner should slow down for it as for throttling.
_THROTTLING = {"ThrottlingException", "ServiceUnavailableException"}
_TRANSIENT = {"InternalServerException", "ModelNotReadyException", "ModelTimeoutException", "ModelStreamErrorException"}


def converse_request(model_id: str, messages: Sequence[Message], params: Mapping[str, Any], *, cache_system: bool = False) -> dict[str, Any]:
    """The keyword arguments of ``converse`` / ``converse_stream`` for chat ``messages`` and ``params``.

    Args:
        model_id: A model id, an inference profile id or ARN, or a provisioned-throughput ARN.
        messages: ``{"role", "content"}`` dicts. System messages (wherever they are) become ``system``
            blocks; consecutive turns of the same role are merged into one message of several text
            blocks, because Converse rejects two user (or two assistant) messages in a row.
        params: ``temperature``, ``top_p``, ``max_tokens``, ``stop``; ``top_k``, ``thinking_budget`` (Claude's
            ``thinking: {type: enabled, budget_tokens}``) and ``extra`` go to ``additionalModelRequestFields``; ``seed`` is ignored, Converse has none. ``top_p`` of 1.0
            (the config default) is not sent: it means "no nucleus cut-off" anyway, and newer Claude
            models reject a request that sets both temperature and topP.
    """
    system: list[dict[str, str]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, text = message["role"], message["content"]
        if role == "system":
            system.append({"text": text})
        elif role not in ("user", "assistant"):
            raise ProviderError(f"{model_id}: Bedrock Converse takes roles system, user and assistant, not {role!r}")
        elif turns and turns[-1]["role"] == role:
            turns[-1]["content"].append({"text": text})
        else:
            turns.append({"role": role, "content": [{"text": text}]})

    chosen = sampling(params)
    inference: dict[str, Any] = {"temperature": chosen["temperature"]}
    if chosen["top_p"] is not None and chosen["top_p"] != 1.0:
        inference["topP"] = chosen["top_p"]
    inference["maxTokens"] = chosen["max_tokens"]
    if params.get("stop"):
        inference["stopSequences"] = list(params["stop"])

    request: dict[str, Any] = {"modelId": model_id, "messages": turns, "inferenceConfig": inference}
    if system:
        # A cache point after the system prompt: later calls read it from Bedrock's prompt cache at the cached rate.
        request["system"] = [*system, {"cachePoint": {"type": "default"}}] if cache_system else system
    fields: dict[str, Any] = {}
    if params.get("top_k") is not None:
        fields["top_k"] = params["top_k"]
    if params.get("thinking_budget") is not None:  # Claude's extended thinking
        fields["thinking"] = {"type": "enabled", "budget_tokens": params["thinking_budget"]}
    fields.update(params.get("extra") or {})
    if fields:
        request["additionalModelRequestFields"] = fields
    return request


class BedrockBackend(Backend):
    """Converse (``stream=False``) or ConverseStream (default, which also gives time to first token).

    Args:
        model_id: Passed through as ``modelId``.
        region: AWS region; see the module docstring for the fallbacks.
        stream: Use ConverseStream and measure time to first token.
        timeout_s: Connect and read timeout of each HTTP call (for a stream: between two reads).
    """

    provider = "bedrock"

    def __init__(
        self,
        model_id: str,
        *,
        region: str | None = None,
        stream: bool = True,
        timeout_s: float = 120.0,
        prompt_caching: bool = False,
    ) -> None:
        super().__init__(model_id)
        self.prompt_caching = prompt_caching
        from botocore.config import Config

        # A session per backend: boto3 sessions are not thread-safe, clients are.
        session, self.region = aws_session(region)
        self.stream = stream
        config = Config(
            # total_max_attempts counts the first call; Config's "max_attempts" counts retries (1 means 2 calls).
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            # The runner bounds concurrency; botocore's default pool of 10 would silently queue beyond it.
            max_pool_connections=64,
        )
        self._client = session.client("bedrock-runtime", region_name=self.region, config=config)

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        request = converse_request(self.model_id, messages, params, cache_system=self.prompt_caching)
        with bedrock_errors(self.model_id):
            return self._stream(request) if self.stream else self._converse(request)

    def _converse(self, request: dict[str, Any]) -> Generation:
        watch = Stopwatch()
        response = self._client.converse(**request)
        watch.stop()
        content = response["output"]["message"]["content"]
        usage = response.get("usage") or {}
        return watch.generation(
            text="".join(block.get("text", "") for block in content),
            output_tokens=usage.get("outputTokens"),
            finish_reason=response.get("stopReason"),
            **_billed_usage(usage),
            provider_latency_s=_seconds(response.get("metrics")),
        )

    def _stream(self, request: dict[str, Any]) -> Generation:
        from botocore.eventstream import ParserError
        from urllib3.exceptions import HTTPError as URLLib3Error

        watch = Stopwatch()
        stop_reason: str | None = None
        usage: Mapping[str, Any] = {}
        server_metrics: Mapping[str, Any] | None = None
        stream = self._client.converse_stream(**request)["stream"]
        try:
            for event in stream:
                if "contentBlockDelta" in event:
                    watch.piece(event["contentBlockDelta"]["delta"].get("text"))
                elif "messageStop" in event:
                    stop_reason = event["messageStop"]["stopReason"]
                elif "metadata" in event:
                    usage = event["metadata"].get("usage") or {}
                    server_metrics = event["metadata"].get("metrics")
        except (URLLib3Error, ParserError) as exc:
            # The event stream reads urllib3's response directly, so a dropped connection surfaces as a
            # urllib3 error (not botocore's), and a truncated or corrupt frame as an event-stream ParserError.
            stream.close()
            raise RetryableError(f"the stream broke mid-answer: {type(exc).__name__}") from exc
        watch.stop()
        if stop_reason is None:
            raise RetryableError("the stream ended before the answer finished (no messageStop event)")
        return watch.generation(
            output_tokens=usage.get("outputTokens"),
            finish_reason=stop_reason,
            **_billed_usage(usage),
            provider_latency_s=_seconds(server_metrics),
        )

    def cache_identity(self) -> Mapping[str, Any]:
        identity = {"region": self.region, "endpoint_url": self._client.meta.endpoint_url}
        # Cached answers carry the cache usage they were recorded with: a caching run never reuses a plain one's.
        return {**identity, "prompt_caching": True} if self.prompt_caching else identity

    def close(self) -> None:
        self._client.close()


def aws_session(region: str | None) -> tuple[Any, str]:
    """A new boto3 session and the region its clients use: ``region``, else ``AWS_REGION``, else
    ``AWS_DEFAULT_REGION`` or the profile's, else ``us-east-1``."""
    import boto3

    session = boto3.session.Session()
    return session, region or os.environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION


@contextmanager
def bedrock_errors(subject: str) -> Iterator[None]:
    """botocore's errors as the runner's: transient ones retryable, the others a :class:`ProviderError` naming ``subject``.

    Example:
        >>> from botocore.exceptions import ClientError
        >>> with bedrock_errors("m"):  # doctest: +ELLIPSIS
        ...     raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Converse")
        Traceback (most recent call last):
        agility_mlflow.errors.RetryableError: ThrottlingException: slow down
    """
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    try:
        yield
    except ClientError as exc:  # also EventStreamError: an exception event inside the stream
        raise _client_error(exc, subject) from exc
    except (ConnectionError, HTTPClientError) as exc:  # timeouts, refused or dropped connections
        raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, invalid parameters: retrying will not help
        raise ProviderError(f"{subject}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc


def _client_error(exc: Any, model_id: str) -> AgilityError:
    """A botocore ``ClientError`` as Retryable or Provider error, with the provider's code and message only."""
    error = exc.response.get("Error") or {}
    code = error.get("Code") or "UnknownError"
    # Exceptions inside an event stream carry the stream member's name: "throttlingException".
    code = code[:1].upper() + code[1:]
    message = f"{code}: {error['Message']}" if error.get("Message") else code
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    if code in _THROTTLING or (status == 429 and code not in _TRANSIENT):
        return RetryableError(message, throttled=True)
    if code in _TRANSIENT or status >= 500:
        return RetryableError(message)
    return ProviderError(f"{model_id}: {message}")


class _BilledTokens(TypedDict):
    input_tokens: int | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None


def _billed_usage(usage: Mapping[str, Any]) -> _BilledTokens:
    """Input tokens counted as the model read them: Bedrock's ``inputTokens`` leaves out cache reads and writes."""
    read, write = usage.get("cacheReadInputTokens"), usage.get("cacheWriteInputTokens")
    uncached = usage.get("inputTokens")
    total = None if uncached is None else uncached + (read or 0) + (write or 0)
    return {"input_tokens": total, "cached_input_tokens": read, "cache_write_tokens": write}


def _seconds(metrics: Mapping[str, Any] | None) -> float | None:
    latency_ms = (metrics or {}).get("latencyMs")
    return latency_ms / 1000 if latency_ms is not None else None
