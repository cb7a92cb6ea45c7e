"""Any OpenAI-compatible chat endpoint: OpenAI, Azure OpenAI (v1 API), vLLM, Ollama, llama.cpp server.

The base URL and key come from the candidate config or the environment (``OPENAI_BASE_URL``,
``OPENAI_API_KEY`` or the variable named by ``api_key_env``). The SDK's own retries are switched
off: the runner's retry layer is the only one, so retries never multiply.

Example:
    >>> backend = OpenAIBackend("gpt-4o-mini", base_url="http://127.0.0.1:8000/v1", api_key="x")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypedDict

from agility_mlflow.backends._base import Backend, Generation, Message, Stopwatch, sampling
from agility_mlflow.errors import AgilityError, ProviderError, RetryableError


class OpenAIBackend(Backend):
    """Chat Completions, streamed with ``include_usage`` to get both time to first token and tokens."""

    provider = "openai"

    def __init__(
        self,
        model_id: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        stream: bool = True,
        timeout_s: float = 120.0,
    ) -> None:
        super().__init__(model_id)
        self.base_url, self._client = _client(model_id, base_url, api_key, api_key_env, timeout_s)
        self.stream = stream

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        request = chat_request(self.model_id, messages, params, self._client.chat.completions.create)
        with _provider_errors(self.model_id):
            return self._stream(request) if self.stream else self._complete(request)

    def _stream(self, request: dict[str, Any]) -> Generation:
        watch = Stopwatch()
        finish_reason = None
        usage = None
        stream = self._client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                watch.piece(choice.delta.content if choice.delta else None)
                finish_reason = choice.finish_reason or finish_reason
        watch.stop()
        if finish_reason is None:
            raise RetryableError("the stream ended before the answer finished")
        return watch.generation(finish_reason=finish_reason, **_usage(usage))

    def _complete(self, request: dict[str, Any]) -> Generation:
        watch = Stopwatch()
        response = self._client.chat.completions.create(**request)
        watch.stop()
        choice = response.choices[0]
        return watch.generation(text=choice.message.content or "", finish_reason=choice.finish_reason, **_usage(response.usage))

    def cache_identity(self) -> Mapping[str, Any]:
        return {"base_url": self.base_url or "https://api.openai.com/v1"}

    def close(self) -> None:
        self._client.close()


def chat_request(model_id: str, messages: Sequence[Message], params: Mapping[str, Any], create: Any) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for chat ``messages`` and inference ``params``.

    ``create`` is the SDK method, whose signature tells an ``extra`` field it takes from one sent in ``extra_body``.
    """
    request: dict[str, Any] = {
        "model": model_id,
        "messages": list(messages),
        **sampling(params),
        **_request_fields(dict(params.get("extra") or {}), create),
    }
    if params.get("reasoning_effort"):
        request["reasoning_effort"] = params["reasoning_effort"]
    if params.get("top_k") is not None:  # not an OpenAI field; vLLM, llama.cpp and others read it from the body
        request["extra_body"] = {**request.get("extra_body", {}), "top_k": params["top_k"]}
    if params.get("stop"):
        request["stop"] = list(params["stop"])
    if params.get("seed") is not None:
        request["seed"] = params["seed"]
    if params.get("response_schema"):
        schema = {"name": "reply", "schema": params["response_schema"]}
        request.setdefault("response_format", {"type": "json_schema", "json_schema": schema})
    return request


class _Tokens(TypedDict):
    input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    cached_input_tokens: int | None


def _usage(usage: Any) -> _Tokens:
    """Tokens as reported: prompt and completion, and of those the reasoning (part of completion_tokens) and
    cached prompt tokens (part of prompt_tokens); ``None`` where the server reports none."""
    completion = getattr(usage, "completion_tokens_details", None)
    prompt = getattr(usage, "prompt_tokens_details", None)
    return {
        "input_tokens": usage.prompt_tokens if usage else None,
        "output_tokens": usage.completion_tokens if usage else None,
        "reasoning_tokens": getattr(completion, "reasoning_tokens", None),
        "cached_input_tokens": getattr(prompt, "cached_tokens", None),
    }


def _request_fields(extra: dict[str, Any], create: Any) -> dict[str, Any]:
    """``extra`` as ``create`` takes it: its own keyword arguments as they are, any other field in ``extra_body``."""
    import inspect

    known = set(inspect.signature(create).parameters)
    body = {k: v for k, v in extra.items() if k not in known}
    fields = {k: v for k, v in extra.items() if k in known}
    if body:
        fields["extra_body"] = {**(fields.get("extra_body") or {}), **body}
    return fields


class OpenAIEmbeddingBackend(Backend):
    """``/embeddings`` of an OpenAI-compatible endpoint, for the metrics that compare meanings.

    The last message's text is embedded; its vector comes back as JSON in :attr:`Generation.text`,
    so the runner caches, retries and counts an embedding like any answer.

    Example:
        >>> backend = OpenAIEmbeddingBackend("text-embedding-3-small", base_url="http://127.0.0.1:8000/v1")  # doctest: +SKIP
        >>> json.loads(backend.generate([{"role": "user", "content": "revenue"}], {}).text)[:2]  # doctest: +SKIP
        [0.0123, -0.0456]
    """

    provider = "openai"

    def __init__(
        self, model_id: str, *, base_url: str | None = None, api_key_env: str | None = None, timeout_s: float = 120.0
    ) -> None:
        super().__init__(model_id)
        self.base_url, self._client = _client(model_id, base_url, None, api_key_env, timeout_s)

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        watch = Stopwatch()
        with _provider_errors(self.model_id):
            response = self._client.embeddings.create(model=self.model_id, input=[messages[-1]["content"]])
        watch.stop()
        usage = response.usage
        return watch.generation(
            text=json.dumps(list(response.data[0].embedding)),
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=0,
            finish_reason="embedding",
        )

    def cache_identity(self) -> Mapping[str, Any]:
        return {"base_url": self.base_url or "https://api.openai.com/v1", "kind": "embedding"}

    def close(self) -> None:
        self._client.close()


def _client(model_id: str, base_url: str | None, api_key: str | None, api_key_env: str | None, timeout_s: float) -> tuple[str | None, Any]:
    """The endpoint and an SDK client with its own retries off (the runner's are the only ones)."""
    import openai

    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    key = api_key or os.environ.get(api_key_env or "OPENAI_API_KEY")
    if not key:
        if not base_url:
            raise AgilityError(f"no API key for OpenAI model '{model_id}': set {api_key_env or 'OPENAI_API_KEY'} or base_url")
        key = "not-needed"  # local OpenAI-compatible servers accept any key
    return base_url, openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout_s)


@contextmanager
def _provider_errors(model_id: str) -> Iterator[None]:
    """The SDK's errors as the runner's: transient ones retryable, the others a :class:`ProviderError`."""
    import openai

    try:
        yield
    except openai.RateLimitError as exc:
        raise RetryableError(_message(exc), throttled=True) from exc
    except (openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError) as exc:
        raise RetryableError(_message(exc)) from exc
    except openai.APIStatusError as exc:
        if exc.status_code in (408, 409) or exc.status_code >= 500:
            raise RetryableError(_message(exc)) from exc
        raise ProviderError(f"{model_id}: {_message(exc)}") from exc
    except _transport_errors() as exc:
        # Raised while reading a streamed body, after the SDK handed the response over: a reset or a
        # read error mid-answer is as transient as one before it.
        raise RetryableError(f"the connection broke mid-answer ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Socket errors and the transport errors of the HTTP library the SDK loaded (``httpx``, or ``httpx2`` in newer SDKs).

    Only modules already imported are looked at: importing one here, from a worker thread, could
    race another thread's import of it.
    """
    errors: list[type[BaseException]] = [ConnectionError]
    for name in ("httpx", "httpx2"):
        error = getattr(sys.modules.get(name), "TransportError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def _message(exc: Exception) -> str:
    """The provider's message without request details (which may carry headers)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return f"{type(exc).__name__}: {error['message']}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
