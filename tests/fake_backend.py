"""An in-process model for unit tests: canned or scripted replies through the real ``Backend`` protocol.

Like inspect_ai's ``mockllm``: no network, no weights, the same ``generate -> Generation`` contract as
every provider (tests/backends/test_contract.py holds it to it), so the runner, the cache, the judges
and the scorers run unchanged around it. Features are proven on real models and real stand-in
servers; this is for the logic around the call.

Example:
    >>> backend = FakeBackend(["first", RuntimeError("boom"), "third"])
    >>> backend.generate([{"role": "user", "content": "hi"}], {}).text
    'first'
    >>> backend.generate([{"role": "user", "content": "hi"}], {})
    Traceback (most recent call last):
    ...
    RuntimeError: boom
    >>> FakeBackend(lambda messages: messages[-1]["content"].upper()).generate([{"role": "user", "content": "hi"}], {}).text
    'HI'
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agility_mlflow.backends import Backend, Generation, Message

Reply = str | Generation | BaseException
"""What one call returns: a text (wrapped in a :class:`Generation`), a whole Generation, or an exception to raise."""


@dataclass(frozen=True)
class FakeCall:
    """One call as the backend received it."""

    messages: list[dict[str, str]]
    params: dict[str, Any]
    sample: Mapping[str, Any] | None

    @property
    def prompt(self) -> str:
        """The last message's content: what a test usually keys on."""
        return self.messages[-1]["content"] if self.messages else ""


class FakeBackend(Backend):
    """Answers from a script instead of a model.

    Args:
        replies: One reply for every call; a sequence consumed in order (running out is an error);
            or a function of the messages returning a reply.
        failures: Exceptions raised, in order, before the reply for a prompt (the last message's
            content), e.g. ``{"s1": [RetryableError("503")]}``: a transient fault, then the answer.
        latency_s: The latency each generation reports (no sleep: tests control time with ``during_call``).
        during_call: Called inside every call while it counts as in flight (a ``threading.Barrier``'s
            ``wait`` or an ``Event``'s), so a test can hold calls and observe concurrency exactly.
        model_id, provider, cacheable: As on :class:`~agility_mlflow.backends.Backend`.

    Attributes:
        calls: Every call received, in arrival order.
        peak: The largest number of calls in flight at once.
    """

    def __init__(
        self,
        replies: Reply | Sequence[Reply] | Callable[[list[dict[str, str]]], Reply] = "The answer is 42.",
        *,
        failures: Mapping[str, Iterable[BaseException]] | None = None,
        latency_s: float = 0.01,
        during_call: Callable[[], Any] | None = None,
        model_id: str = "fake-model",
        provider: str = "fake",
        cacheable: bool = True,
    ) -> None:
        super().__init__(model_id)
        self.provider = provider
        self.cacheable = cacheable
        self._replies = replies if callable(replies) or isinstance(replies, (str, Generation, BaseException)) else list(replies)
        self._next = 0
        self.failures = {prompt: list(errors) for prompt, errors in (failures or {}).items()}
        self.latency_s = latency_s
        self.during_call = during_call
        self.calls: list[FakeCall] = []
        self.active = 0
        self.peak = 0
        self.closed = False
        self._lock = threading.Lock()

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        call = FakeCall([dict(m) for m in messages], dict(params), sample)
        with self._lock:
            self.calls.append(call)
            self.active += 1
            self.peak = max(self.peak, self.active)
            pending = self.failures.get(call.prompt)
            reply = pending.pop(0) if pending else self._scripted(call)
        try:
            if self.during_call is not None:
                self.during_call()
            if isinstance(reply, BaseException):
                raise reply
            if isinstance(reply, Generation):
                return reply
            return Generation(reply, self.latency_s, None, _words(call.messages), len(reply.split()), "stop")
        finally:
            with self._lock:
                self.active -= 1

    def _scripted(self, call: FakeCall) -> Reply:
        if callable(self._replies):
            return self._replies(call.messages)
        if not isinstance(self._replies, list):
            return self._replies
        if self._next >= len(self._replies):
            return AssertionError(f"FakeBackend got call {self._next + 1} but was scripted for {len(self._replies)}")
        self._next += 1
        return self._replies[self._next - 1]

    @property
    def prompts(self) -> list[str]:
        """The last message of every call, in arrival order."""
        return [call.prompt for call in self.calls]

    def close(self) -> None:
        self.closed = True


def _words(messages: Sequence[Mapping[str, str]]) -> int:
    return sum(len(m.get("content", "").split()) for m in messages)
