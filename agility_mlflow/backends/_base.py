"""The one protocol every model provider implements."""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agility_mlflow.config import InferenceParams

Message = Mapping[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


@dataclass(frozen=True)
class Generation:
    """One model answer with what it cost in time and tokens.

    ``None`` means "not measured" (a provider that reports no usage, a non-streaming call has no
    time to first token); it is never silently turned into 0.
    """

    text: str
    latency_s: float | None
    ttft_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    provider_latency_s: float | None = None
    """The provider's own processing time, when it reports one (Bedrock's ``latencyMs``)."""
    reasoning_tokens: int | None = None
    """Of ``output_tokens``, those the model spent reasoning (OpenAI ``completion_tokens_details``)."""
    cached_input_tokens: int | None = None
    """Of ``input_tokens``, those read from the provider's prompt cache (billed at the cached rate)."""
    cache_write_tokens: int | None = None
    """Of ``input_tokens``, those written to the provider's prompt cache (Bedrock; billed at the cache-write rate)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
            "provider_latency_s": self.provider_latency_s,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generation:
        fields: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**fields)


_DEFAULTS = InferenceParams()


def sampling(params: Mapping[str, Any]) -> dict[str, Any]:
    """``temperature``, ``top_p`` and ``max_tokens`` of ``params``, each absent one at the config's default.

    Example:
        >>> sampling({"temperature": 0.7})
        {'temperature': 0.7, 'top_p': 1.0, 'max_tokens': 256}
    """
    # The defaults are the config's own: a caller that passes no params gets what a config without them means.
    return {name: params.get(name, getattr(_DEFAULTS, name)) for name in ("temperature", "top_p", "max_tokens")}


class Stopwatch:
    """Times one model call from its creation: latency, and time to first token when the answer is streamed.

    Example:
        >>> watch = Stopwatch()
        >>> for piece in ["4", "", "2"]:
        ...     watch.piece(piece)
        >>> answer = watch.generation(finish_reason="stop")
        >>> answer.text, answer.ttft_s is not None, answer.latency_s >= answer.ttft_s
        ('42', True, True)
        >>> Stopwatch().generation(text="whole").ttft_s is None  # nothing streamed: no time to first token
        True
    """

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._first: float | None = None
        self._end: float | None = None
        self._pieces: list[str] = []

    def piece(self, text: str | None) -> None:
        """One streamed piece of the answer; the first non-empty one marks the time to first token."""
        if text:
            if self._first is None:
                self._first = time.perf_counter()
            self._pieces.append(text)

    def stop(self) -> None:
        """The answer is complete (later work, such as counting tokens, is not part of its latency)."""
        self._end = time.perf_counter()

    @property
    def text(self) -> str:
        """The streamed pieces so far, joined."""
        return "".join(self._pieces)

    def generation(self, *, text: str | None = None, **fields: Any) -> Generation:
        """The timed :class:`Generation`: ``text`` (default: the streamed pieces) and the other ``fields`` as given."""
        end = self._end if self._end is not None else time.perf_counter()
        ttft = None if self._first is None else self._first - self._start
        return Generation(text=self.text if text is None else text, latency_s=end - self._start, ttft_s=ttft, **fields)


class Backend(abc.ABC):
    """A model provider.

    Subclasses raise :class:`~agility_mlflow.errors.RetryableError` for transient failures and
    :class:`~agility_mlflow.errors.ProviderError` for failures that retrying will not fix.

    Attributes:
        provider: The config name of the provider (``local``, ``openai``, ``bedrock``, ``replay``).
        model_id: The provider's model id.
        cacheable: Whether answers may be served from the response cache.
        max_concurrency: An upper bound on parallel calls the provider can take (None: no bound).
    """

    provider: str = ""
    cacheable: bool = True
    max_concurrency: int | None = None

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    @abc.abstractmethod
    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        """Answer ``messages`` with inference ``params`` (temperature, top_p, max_tokens, stop, ...).

        ``sample`` is the dataset row the messages were rendered from; only replaying backends read it.
        ``params["response_schema"]`` (a JSON schema, set by judges) asks for a JSON reply; backends
        that can constrain the output to it (llama.cpp grammars, OpenAI structured outputs) do.
        """

    def cache_identity(self) -> Mapping[str, Any]:
        """What besides model id, params and messages changes the answer (e.g. an endpoint URL)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, threads or model weights."""
