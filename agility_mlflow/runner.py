"""Calls a backend for every sample: bounded concurrency, one retry layer, the response cache.

- Concurrency is bounded by ``run.concurrency`` (and the backend's own bound) and adapts: a
  throttled call halves it, and it grows back by one after each run of successes.
- Transient faults (:class:`RetryableError`: throttling, 5xx, timeouts, broken streams) are
  retried with exponential backoff and full jitter; a sample that still fails is recorded with
  its error, never dropped. A :class:`ProviderError` (bad model id, access denied) stops the
  whole configuration at once without burning retries.
- Answers are cached by content, so re-running an identical configuration makes no calls.

Example:
    >>> from agility_mlflow.backends.replay import ReplayBackend
    >>> from agility_mlflow.config import RunSettings
    >>> runner = Runner(RunSettings(cache=False), progress=False)
    >>> out = runner.run(ReplayBackend("m"), {}, [Request("q1", [], {"answer_source_llm": "42"})])
    >>> out[0].generation.text, out[0].error
    ('42', None)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from agility_mlflow.backends import Backend, BatchBackend, Generation, JobStore, run_batch
from agility_mlflow.cache import ResponseCache, cache_key
from agility_mlflow.config import RunSettings
from agility_mlflow.errors import ProviderError, RetryableError
from agility_mlflow.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One sample's rendered messages, and the row they came from."""

    sample_id: str
    messages: list[dict[str, str]]
    sample: Mapping[str, Any]


class CallGuard(Protocol):
    """Asked before every model call the runner makes (retries included), told after: a call or spend limit.

    ``reserve`` raises :class:`~agility_mlflow.errors.BudgetExhausted` to refuse a call; cache hits never reach it.
    """

    def reserve(self, backend: Backend, params: Mapping[str, Any], messages: Sequence[Mapping[str, str]]) -> Any: ...

    def settle(self, ticket: Any, generation: Generation | None) -> None: ...


@dataclass
class Outcome:
    """What happened to one request: an answer or an error, never neither."""

    request: Request
    generation: Generation | None
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    started_ns: int = 0
    ended_ns: int = 0

    @property
    def sample_id(self) -> str:
        return self.request.sample_id


@dataclass
class RunnerStats:
    calls: int = 0
    retries: int = 0
    throttled: int = 0
    cache_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class AdaptiveLimiter:
    """A semaphore whose size halves when the provider throttles and creeps back after successes.

    Example:
        >>> limiter = AdaptiveLimiter(8)
        >>> limiter.throttled(); limiter.limit
        4
    """

    def __init__(self, limit: int) -> None:
        self.max_limit = limit
        self.limit = limit
        self._active = 0
        self._successes = 0
        self._cond = threading.Condition()

    def __enter__(self) -> AdaptiveLimiter:
        with self._cond:
            while self._active >= self.limit:
                self._cond.wait()
            self._active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def throttled(self) -> None:
        with self._cond:
            self.limit = max(1, self.limit // 2)
            self._successes = 0

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.max_limit:
                self.limit += 1
                self._successes = 0
                self._cond.notify_all()


class Runner:
    """Runs requests against backends with the settings of the config's ``run:`` section."""

    def __init__(
        self,
        settings: RunSettings,
        cache: ResponseCache | None = None,
        *,
        progress: bool | None = None,
        backoff_max_s: float = 30.0,
        guard: CallGuard | None = None,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.cache = cache if settings.cache else None
        self.progress = progress
        self.backoff_max_s = backoff_max_s
        self.stats = RunnerStats()
        self._limiters: dict[int, tuple[AdaptiveLimiter, Retrying]] = {}
        self._limiters_lock = threading.Lock()

    def call(self, backend: Backend, params: Mapping[str, Any], request: Request) -> Outcome:
        """One request, with the same retries and cache as :meth:`run`; safe to call from many threads.

        Calls to one backend share one adaptive concurrency limit, so a judge called from Ragas's or
        DeepEval's own loops still backs off when throttled. A :class:`ProviderError` is raised.
        """
        with self._limiters_lock:
            lane = self._limiters.get(id(backend))
            if lane is None:
                limiter = AdaptiveLimiter(min(self.settings.concurrency, backend.max_concurrency or self.settings.concurrency))
                lane = self._limiters[id(backend)] = (limiter, self._retrying(limiter))
        return self._one(backend, params, request, *lane, _Abort())

    def run(
        self,
        backend: Backend,
        params: Mapping[str, Any],
        requests: Sequence[Request],
        *,
        description: str = "",
        on_outcome: Callable[[int, Outcome], None] | None = None,
    ) -> list[Outcome]:
        """One outcome per request, in request order; a ``mode: batch`` backend answers the uncached ones in one job.

        ``on_outcome(index, outcome)`` is called on the calling thread as each request finishes (in
        completion order), while the other calls run: work done there overlaps them.
        """
        if isinstance(backend, BatchBackend):
            answered = self._run_batch(backend, params, requests, description)
            if on_outcome is not None:
                for index, outcome in enumerate(answered):
                    on_outcome(index, outcome)
            return answered
        workers = min(self.settings.concurrency, backend.max_concurrency or self.settings.concurrency, max(len(requests), 1))
        limiter = AdaptiveLimiter(workers)
        retrying = self._retrying(limiter)
        abort = _Abort()
        outcomes: list[Outcome | None] = [None] * len(requests)
        bar = progress_bar(len(requests), description, self.progress)
        # Finished futures arrive on a queue: waiting on the set of pending futures again after each
        # completion would cost O(N) per completion, O(N^2) per run.
        finished: queue.SimpleQueue[Future[Outcome]] = queue.SimpleQueue()
        # Only a few requests per worker are queued ahead, the next submitted as one finishes: each pending
        # future is a handful of objects (a condition, its lock and deque, a work item) that the cyclic GC
        # scans at every full collection; queuing all N at once held ~1.5 KB and those objects per sample.
        ahead = 4 * workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agility") as pool:
            pending: dict[Future[Outcome], int] = {}

            def submit(i: int) -> None:
                future = pool.submit(self._one, backend, params, requests[i], limiter, retrying, abort)
                pending[future] = i
                future.add_done_callback(finished.put)

            try:
                for i in range(min(ahead, len(requests))):
                    submit(i)
                for done in range(len(requests)):
                    future = _next_finished(finished)
                    index = pending.pop(future)
                    if future.exception() is not None and abort.error is not None:
                        raise abort.error  # the first provider error, not a follower's "stopped"
                    outcome = outcomes[index] = future.result()
                    if done + ahead < len(requests):
                        submit(done + ahead)
                    if on_outcome is not None:
                        on_outcome(index, outcome)
                    bar.update(1)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            finally:
                bar.close()
        return [o for o in outcomes if o is not None]

    def _run_batch(self, backend: BatchBackend, params: Mapping[str, Any], requests: Sequence[Request], description: str) -> list[Outcome]:
        """Cache hits as usual; the misses as one batch job (resumed if a killed run submitted it), each failed record a per-sample error."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        keys: list[str | None] = [None] * len(requests)
        todo = []
        for i, request in enumerate(requests):
            if self.cache is not None and backend.cacheable:
                keys[i] = cache_key(backend.provider, backend.model_id, backend.cache_identity(), params, request.messages)
                hit = self.cache.get(keys[i])  # type: ignore[arg-type]
                if hit is not None:
                    self.stats.add(cache_hits=1)
                    outcomes[i] = Outcome(request, hit, cached=True)
                    continue
            todo.append(i)
        if todo and len(todo) < backend.limits.min_records and len(todo) < len(requests):
            # Left over after cache hits (records a job failed before): too few for a job, and answering them on demand
            # would mix measured latencies into a batch run. Said per sample; the cached answers stand.
            error = (f"not submitted: {len(todo)} uncached samples are below the batch minimum of {backend.limits.min_records} records "
                     f"(the other {len(requests) - len(todo)} answers came from the cache)")
            logger.warning("%s: %s", description or backend.model_id, error)
            return [o if o is not None else Outcome(r, None, error) for o, r in zip(outcomes, requests)]
        if todo:
            tickets = []
            answers: list[Generation | str] = []
            try:
                for i in todo:  # a spend limit refuses the whole job before it is submitted, never half of it
                    tickets.append(self.guard.reserve(backend, params, requests[i].messages) if self.guard is not None else None)
                self.stats.add(calls=len(todo))
                answers = run_batch(backend, params, [requests[i].messages for i in todo], JobStore(), description=description,
                                    progress=self.progress)
            finally:
                if self.guard is not None:
                    for n, ticket in enumerate(tickets):
                        answer = answers[n] if n < len(answers) else None
                        self.guard.settle(ticket, answer if isinstance(answer, Generation) else None)
            # No start and end times: a sample's trace must not show the whole job's hours as its duration.
            for i, answer in zip(todo, answers):
                if isinstance(answer, Generation):
                    if keys[i] is not None:
                        self.cache.put(keys[i], answer)  # type: ignore[union-attr, arg-type]
                    outcomes[i] = Outcome(requests[i], answer, attempts=1)
                else:
                    outcomes[i] = Outcome(requests[i], None, answer, attempts=1)
        return [o for o in outcomes if o is not None]

    def _retrying(self, limiter: AdaptiveLimiter) -> Retrying:
        """The retry policy of calls sharing ``limiter``: a throttled retry halves its limit.

        One policy serves all their calls, from any thread (tenacity keeps each thread's attempt count
        apart): a policy built per call was most of a call's overhead (~20 of 23 us a replayed answer)
        and left cyclic garbage behind for the GC.
        """

        def on_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.stats.add(retries=1)
            if isinstance(exc, RetryableError) and exc.throttled:
                self.stats.add(throttled=1)
                limiter.throttled()

        return Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(self.settings.max_retries + 1),
            wait=wait_random_exponential(multiplier=0.5, max=self.backoff_max_s),
            before_sleep=on_retry,
            reraise=True,
        )

    def _one(
        self, backend: Backend, params: Mapping[str, Any], request: Request, limiter: AdaptiveLimiter, retrying: Retrying, abort: _Abort
    ) -> Outcome:
        key = None
        if self.cache is not None and backend.cacheable:
            key = cache_key(backend.provider, backend.model_id, backend.cache_identity(), params, request.messages)
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.add(cache_hits=1)
                return Outcome(request, hit, cached=True)

        def attempt() -> Generation:
            with limiter:
                if abort.is_set():  # another sample hit an error no retry fixes: start no new call
                    raise ProviderError("stopped: the configuration already failed")
                ticket = self.guard.reserve(backend, params, request.messages) if self.guard is not None else None
                self.stats.add(calls=1)
                generation = None
                try:
                    generation = backend.generate(request.messages, params, sample=request.sample)
                finally:
                    if self.guard is not None:
                        self.guard.settle(ticket, generation)
            limiter.succeeded()
            return generation

        started = time.time_ns()
        generation: Generation | None = None
        error: str | None = None
        try:
            generation = retrying(attempt)
        except ProviderError as exc:
            abort.set(exc)
            raise
        except RetryableError as exc:
            error = f"{exc} (gave up after {retrying.statistics.get('attempt_number', 1)} attempts)"
        except Exception as exc:  # one bad sample must not sink the run: it is recorded, not dropped
            error = f"{type(exc).__name__}: {exc}"
        if generation is not None and key is not None and self.cache is not None:
            self.cache.put(key, generation)
        attempts = retrying.statistics.get("attempt_number", 1)
        return Outcome(request, generation, error, attempts=attempts, started_ns=started, ended_ns=time.time_ns())


def _next_finished(finished: queue.SimpleQueue[Future[Outcome]]) -> Future[Outcome]:
    while True:
        try:
            return finished.get(timeout=1.0)  # a timeout keeps Ctrl-C answered
        except queue.Empty:
            continue


class _Abort:
    """Set by the first sample that fails in a way no retry fixes; the others then start no call."""

    def __init__(self) -> None:
        self.error: ProviderError | None = None
        self._lock = threading.Lock()

    def set(self, error: ProviderError) -> None:
        with self._lock:
            self.error = self.error or error

    def is_set(self) -> bool:
        return self.error is not None


