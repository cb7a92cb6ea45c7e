"""The runner: bounded concurrency, one retry layer, adaptive throttling, the response cache."""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from agility_mlflow.cache import ResponseCache
from agility_mlflow.config import RunSettings
from agility_mlflow.errors import ProviderError, RetryableError
from agility_mlflow.runner import AdaptiveLimiter, Request, Runner
from tests.fake_backend import FakeBackend


def _echo(messages: list[dict[str, str]]) -> str:
    return f"answer {messages[-1]['content']}"


def _backend(failures: dict[str, list[Exception]] | None = None, **options: Any) -> FakeBackend:
    """Answers ``answer <sample id>`` (each request's only message is its sample id), failing as scripted first."""
    return FakeBackend(_echo, failures=failures, **options)


def _requests(n: int) -> list[Request]:
    return [Request(f"s{i}", [{"role": "user", "content": f"s{i}"}], {}) for i in range(n)]


def _runner(tmp_path: Path | None = None, **settings: Any) -> Runner:
    cache = ResponseCache(tmp_path / "cache") if tmp_path else None
    return Runner(RunSettings(**settings), cache, progress=False, backoff_max_s=0.01)


def test_concurrency_is_bounded_and_order_kept() -> None:
    # Each call waits until two others are in flight with it: the run can only finish if it really runs
    # three at once (else the barrier breaks and the samples fail), and the peak shows no fourth joined.
    barrier = threading.Barrier(3, timeout=60)
    backend = _backend(during_call=barrier.wait)
    outcomes = _runner(concurrency=3, cache=False).run(backend, {}, _requests(12))
    assert [o.sample_id for o in outcomes] == [f"s{i}" for i in range(12)]
    assert [o.error for o in outcomes] == [None] * 12
    assert backend.peak == 3
    assert all(o.generation.text == f"answer {o.sample_id}" for o in outcomes)


def test_each_outcome_is_handed_over_while_the_other_calls_still_run() -> None:
    # s1's call only ends once the callback has seen s0's outcome: callbacks made after the run would leave it waiting.
    seen: list[tuple[int, str]] = []
    s0_seen = threading.Event()

    def reply(messages: list[dict[str, str]]) -> str:
        sample_id = messages[-1]["content"]
        return f"s0 seen before me: {s0_seen.wait(5)}" if sample_id == "s1" else _echo(messages)

    def on_outcome(index: int, outcome: Any) -> None:
        seen.append((index, outcome.sample_id))
        if outcome.sample_id == "s0":
            s0_seen.set()

    outcomes = _runner(concurrency=2, cache=False).run(FakeBackend(reply), {}, _requests(4), on_outcome=on_outcome)
    assert outcomes[1].generation.text == "s0 seen before me: True"
    assert sorted(seen) == [(i, f"s{i}") for i in range(4)]


def test_only_a_few_requests_per_worker_wait_as_futures() -> None:
    # Submitting every request at once held a future (a condition, its lock and deque) per sample
    # until the run ended: memory and GC work that grew with the run.
    alive: list[int] = []

    def reply(messages: list[dict[str, str]]) -> str:
        if messages[-1]["content"] == "s0":
            time.sleep(0.3)  # time enough to queue them all, were they queued at once
            alive.append(sum(isinstance(o, Future) for o in gc.get_objects()))
        return _echo(messages)

    outcomes = _runner(concurrency=2, cache=False).run(FakeBackend(reply), {}, _requests(500))
    assert [o.error for o in outcomes] == [None] * 500
    assert alive and alive[0] <= 4 * 2 + 4


def test_calls_leave_no_cyclic_garbage() -> None:
    # A retry policy built per call left two objects only the cyclic GC frees behind every call.
    runner = _runner(concurrency=2, cache=False)
    runner.run(_backend(), {}, _requests(10))
    gc.collect()
    gc.disable()
    try:
        runner.run(_backend(), {}, _requests(300))
        garbage = gc.collect()
    finally:
        gc.enable()
    assert garbage < 100


def test_transient_errors_are_retried_then_succeed() -> None:
    backend = _backend({"s1": [RetryableError("503"), RetryableError("timeout")]})
    runner = _runner(concurrency=2, cache=False)
    outcomes = runner.run(backend, {}, _requests(3))
    assert [o.error for o in outcomes] == [None, None, None]
    assert outcomes[1].attempts == 3
    assert backend.prompts.count("s1") == 3
    assert runner.stats.retries == 2


def test_exhausted_retries_are_recorded_per_sample_not_dropped() -> None:
    backend = _backend({"s0": [RetryableError("503 busy")] * 10})
    outcomes = _runner(concurrency=1, cache=False, max_retries=2).run(backend, {}, _requests(2))
    assert len(outcomes) == 2
    assert outcomes[0].generation is None
    assert outcomes[0].error == "503 busy (gave up after 3 attempts)"
    assert outcomes[1].error is None


def test_provider_error_stops_the_configuration_without_retrying() -> None:
    backend = _backend({"s0": [ProviderError("ValidationException: bad model id")]})
    with pytest.raises(ProviderError, match="bad model id"):
        _runner(concurrency=1, cache=False).run(backend, {}, _requests(5))
    assert backend.prompts.count("s0") == 1


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
    backend = _backend(failures)
    runner = _runner(concurrency=4, cache=False)
    outcomes = runner.run(backend, {}, _requests(30))
    assert [o.sample_id for o in outcomes] == [f"s{i}" for i in range(30)]
    assert all(o.error is None for o in outcomes)
    assert runner.stats.throttled == 10
    assert len(backend.calls) == 40


def test_cache_makes_a_rerun_free_and_equal(tmp_path: Path) -> None:
    backend = _backend()
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
    backend = _backend({"s0": [RetryableError("x")] * 3})
    _runner(tmp_path, concurrency=1, max_retries=0).run(backend, {}, _requests(1))
    outcomes = _runner(tmp_path, concurrency=1, max_retries=0).run(backend, {}, _requests(1))
    assert outcomes[0].cached is False
    assert len(backend.calls) == 2


def test_corrupted_cache_entry_is_detected_and_recomputed(tmp_path: Path) -> None:
    backend = _backend()
    _runner(tmp_path, concurrency=1).run(backend, {}, _requests(1))
    (entry,) = (tmp_path / "cache").glob("*/*.json")
    entry.write_text(entry.read_text().replace("answer s0", "poisoned"), encoding="utf-8")
    outcomes = _runner(tmp_path, concurrency=1).run(backend, {}, _requests(1))
    assert outcomes[0].generation.text == "answer s0"
    assert outcomes[0].cached is False
    assert len(backend.calls) == 2
    entry.write_bytes(b"\x00garbage")
    assert _runner(tmp_path, concurrency=1).run(backend, {}, _requests(1))[0].generation.text == "answer s0"
