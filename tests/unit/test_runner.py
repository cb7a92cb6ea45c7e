"""The runner: bounded concurrency, one retry layer, adaptive throttling, the response cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agility_mlflow.backends import Backend, Generation
from agility_mlflow.cache import ResponseCache
from agility_mlflow.config import RunSettings
from agility_mlflow.errors import ProviderError, RetryableError
from agility_mlflow.runner import AdaptiveLimiter, Request, Runner


class ScriptedBackend(Backend):
    """A stand-in that answers with the sample id after a delay, failing as scripted."""

    provider = "scripted"

    def __init__(self, failures: Mapping[str, list[Exception]] | None = None, delay_s: float = 0.01) -> None:
        super().__init__("scripted-model")
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def generate(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any], *, sample=None) -> Generation:
        sample_id = messages[0]["content"]
        with self._lock:
            self.calls.append(sample_id)
            self.active += 1
            self.peak = max(self.peak, self.active)
            pending = self.failures.get(sample_id)
            failure = pending.pop(0) if pending else None
        try:
            time.sleep(self.delay_s)
            if failure is not None:
                raise failure
            return Generation(f"answer {sample_id}", self.delay_s, 0.001, 10, 2, "stop")
        finally:
            with self._lock:
                self.active -= 1


def _requests(n: int) -> list[Request]:
    return [Request(f"s{i}", [{"role": "user", "content": f"s{i}"}], {}) for i in range(n)]


def _runner(tmp_path: Path | None = None, **settings: Any) -> Runner:
    cache = ResponseCache(tmp_path / "cache") if tmp_path else None
    return Runner(RunSettings(**settings), cache, progress=False, backoff_max_s=0.01)


def test_concurrency_is_bounded_and_order_kept() -> None:
    backend = ScriptedBackend(delay_s=0.02)
    outcomes = _runner(concurrency=3, cache=False).run(backend, {}, _requests(12))
    assert [o.sample_id for o in outcomes] == [f"s{i}" for i in range(12)]
    assert backend.peak == 3
    assert all(o.generation.text == f"answer {o.sample_id}" for o in outcomes)


def test_transient_errors_are_retried_then_succeed() -> None:
    backend = ScriptedBackend({"s1": [RetryableError("503"), RetryableError("timeout")]})
    runner = _runner(concurrency=2, cache=False)
    outcomes = runner.run(backend, {}, _requests(3))
    assert [o.error for o in outcomes] == [None, None, None]
    assert outcomes[1].attempts == 3
    assert backend.calls.count("s1") == 3
    assert runner.stats.retries == 2


def test_exhausted_retries_are_recorded_per_sample_not_dropped() -> None:
    backend = ScriptedBackend({"s0": [RetryableError("503 busy")] * 10})
    outcomes = _runner(concurrency=1, cache=False, max_retries=2).run(backend, {}, _requests(2))
    assert len(outcomes) == 2
    assert outcomes[0].generation is None
    assert outcomes[0].error == "503 busy (gave up after 3 attempts)"
    assert outcomes[1].error is None


def test_provider_error_stops_the_configuration_without_retrying() -> None:
    backend = ScriptedBackend({"s0": [ProviderError("ValidationException: bad model id")]})
    with pytest.raises(ProviderError, match="bad model id"):
        _runner(concurrency=1, cache=False).run(backend, {}, _requests(5))
    assert backend.calls.count("s0") == 1


def test_throttling_halves_concurrency_and_successes_restore_it() -> None:
    limiter = AdaptiveLimiter(8)
    limiter.throttled()
    limiter.throttled()
    assert limiter.limit == 2
    for _ in range(2):
        limiter.succeeded()
    assert limiter.limit == 3
    for _ in range(3 + 4 + 5 + 6 + 7):
        limiter.succeeded()
    assert limiter.limit == 8


def test_throttled_samples_all_complete_once() -> None:
    failures = {f"s{i}": [RetryableError("ThrottlingException", throttled=True)] for i in range(0, 30, 3)}
    backend = ScriptedBackend(failures)
    runner = _runner(concurrency=4, cache=False)
    outcomes = runner.run(backend, {}, _requests(30))
    assert [o.sample_id for o in outcomes] == [f"s{i}" for i in range(30)]
    assert all(o.error is None for o in outcomes)
    assert runner.stats.throttled == 10
    assert len(backend.calls) == 40


def test_cache_makes_a_rerun_free_and_equal(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    first = _runner(tmp_path, concurrency=2).run(backend, {"temperature": 0}, _requests(4))
    calls_after_first = len(backend.calls)
    second_runner = _runner(tmp_path, concurrency=2)
    second = second_runner.run(backend, {"temperature": 0}, _requests(4))
    assert len(backend.calls) == calls_after_first == 4
    assert second_runner.stats.cache_hits == 4
    assert [o.generation for o in second] == [o.generation for o in first]
    assert all(o.cached for o in second)
    # Another parameter value is another configuration: no hit.
    _runner(tmp_path, concurrency=2).run(backend, {"temperature": 0.5}, _requests(1))
    assert len(backend.calls) == 5


def test_errors_are_not_cached(tmp_path: Path) -> None:
    backend = ScriptedBackend({"s0": [RetryableError("x")] * 3})
    _runner(tmp_path, concurrency=1, max_retries=0).run(backend, {}, _requests(1))
    outcomes = _runner(tmp_path, concurrency=1, max_retries=0).run(backend, {}, _requests(1))
    assert outcomes[0].cached is False
    assert len(backend.calls) == 2


def test_corrupted_cache_entry_is_detected_and_recomputed(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    _runner(tmp_path, concurrency=1).run(backend, {}, _requests(1))
    (entry,) = (tmp_path / "cache").glob("*/*.json")
    entry.write_text(entry.read_text().replace("answer s0", "poisoned"), encoding="utf-8")
    outcomes = _runner(tmp_path, concurrency=1).run(backend, {}, _requests(1))
    assert outcomes[0].generation.text == "answer s0"
    assert outcomes[0].cached is False
    assert len(backend.calls) == 2
    entry.write_bytes(b"\x00garbage")
    assert _runner(tmp_path, concurrency=1).run(backend, {}, _requests(1))[0].generation.text == "answer s0"
