"""Sample traces written in bulk by a background writer, off the model calls' path.

MLflow's own tracing path costs about 20 ms per trace here: an OpenTelemetry span through the
tracer, then per trace a ``log_spans`` and a ``start_trace`` transaction (the second one colliding
with the first and taking the store's slow merge path). A sample trace is one finished span whose
every field is known when it is logged, so it is built directly as an MLflow span entity, queued,
and written by one thread with ``log_spans`` many traces per transaction (one OTLP request
through a server), then linked to its run ``MAX_TRACE_LINKS_PER_REQUEST`` at a time; the judge's
feedback on a trace goes with it, written right after.

Written to a database directly (``sqlite:``, ``postgresql:``...), the store's work is MLflow's ORM
in this process: ~2.5 ms of CPU a trace, holding the GIL the model calls' threads need. So after
:func:`prepare` (called before a run's calls start, while no call thread runs) those writes are
done by a forked helper process, one per process, which the writer thread hands each batch to;
through a server the server does that work, and the thread writes itself.

The stored trace is what MLflow's path stores: one trace per sample in the run's experiment, its
name, inputs and outputs (the request and response previews), state, timing, token usage and cost
(computed from the run's own prices), found by ``mlflow.search_traces(run_id=...)`` and shown on
the run's Traces tab.

Example:
    >>> trace_id, span = sample_span(SampleCall(name="m/p", provider="openai", model_id="gpt-4o-mini",
    ...     messages=[{"role": "user", "content": "hi"}], output="hello", error=None, start_ns=0,
    ...     end_ns=10**8, input_tokens=3, output_tokens=1, attributes={}))
    >>> trace_id.startswith("tr-"), span.trace_id == trace_id
    (True, True)
    >>> submit("sqlite:///mlflow.db", "1", run_id, trace_id, span)  # doctest: +SKIP
    >>> flush()  # doctest: +SKIP
    0
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# Spans per log_spans call: one transaction (one request through a server) each.
_CHUNK = 250


@dataclass(frozen=True)
class Judgement:
    """A judge's feedback on one sample's trace: shown with its rationale (or the judge's error) in the UI."""

    name: str
    value: float | None
    rationale: str | None
    error: str | None
    judge: str


@dataclass
class _Pending:
    tracking_uri: str
    experiment_id: str
    run_id: str
    trace_id: str
    span: Any
    judgements: Sequence[Judgement] = ()


@dataclass(frozen=True)
class SampleCall:
    """One sample's model call, as its trace shows it: every field is known when the call has ended.

    ``cost_usd`` is ``(input, output)`` in USD, shown as the trace's cost; ``None`` leaves it unknown.
    """

    name: str
    provider: str
    model_id: str
    messages: Sequence[Mapping[str, str]]
    output: str | None
    error: str | None
    start_ns: int
    end_ns: int
    input_tokens: int | None
    output_tokens: int | None
    attributes: Mapping[str, Any]
    cost_usd: tuple[float, float] | None = None


def sample_span(call: SampleCall) -> tuple[str, Any]:
    """A new trace id and the one finished ``CHAT_MODEL`` span of that trace, as MLflow stores it."""
    from mlflow.entities import Span, SpanType
    from mlflow.tracing.constant import SpanAttributeKey, TraceTagKey
    from mlflow.tracing.utils import TraceJSONEncoder, build_otel_context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Status, StatusCode

    otel_trace_id = random.getrandbits(128) or 1
    trace_id = f"tr-{otel_trace_id:032x}"
    values: dict[str, Any] = {
        SpanAttributeKey.REQUEST_ID: trace_id,
        SpanAttributeKey.SPAN_TYPE: SpanType.CHAT_MODEL,
        SpanAttributeKey.INPUTS: {"messages": [dict(m) for m in call.messages]},
        SpanAttributeKey.OUTPUTS: call.output if call.error is None else {"error": call.error},
        SpanAttributeKey.MODEL: call.model_id,
        SpanAttributeKey.MODEL_PROVIDER: call.provider,
        f"{SpanAttributeKey.TRACE_TAG_PREFIX}{TraceTagKey.TRACE_NAME}": call.name,
        **call.attributes,
    }
    if call.input_tokens is not None and call.output_tokens is not None:
        values[SpanAttributeKey.CHAT_USAGE] = {
            "input_tokens": call.input_tokens, "output_tokens": call.output_tokens, "total_tokens": call.input_tokens + call.output_tokens,
        }
    if call.cost_usd is not None:
        values[SpanAttributeKey.LLM_COST] = {"input_cost": call.cost_usd[0], "output_cost": call.cost_usd[1], "total_cost": sum(call.cost_usd)}
    # MLflow keeps every span attribute JSON-encoded, as its own spans do.
    encoded = {key: json.dumps(value, cls=TraceJSONEncoder, ensure_ascii=False) for key, value in values.items()}
    status = Status(StatusCode.ERROR, call.error) if call.error is not None else Status(StatusCode.OK)
    span = ReadableSpan(
        name=call.name,
        context=build_otel_context(otel_trace_id, random.getrandbits(64) or 1),
        parent=None,
        start_time=call.start_ns,
        end_time=max(call.end_ns, call.start_ns),
        attributes=encoded,
        status=status,
        resource=Resource.get_empty(),  # Resource.create() probes the host: slow, and nothing of it is stored
    )
    return trace_id, Span(span)


@dataclass
class _Failures:
    count: int = 0
    first: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, count: int, exc: BaseException) -> None:
        with self.lock:
            self.count += count
            self.first = self.first or (str(exc) if isinstance(exc, _HelperError) else _describe(exc))


class TraceWriter:
    """Writes submitted sample spans in bulk from one background thread; :meth:`flush` waits for them.

    ``submit`` only queues, so it never waits on the tracking store. A write that fails is logged
    (with the number of traces lost) when the writer is flushed; the run's results do not depend on it.
    """

    def __init__(self, chunk: int = _CHUNK) -> None:
        self._chunk = chunk
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._failures = _Failures()
        self._helper: _Helper | None = None

    def submit(self, tracking_uri: str, experiment_id: str, run_id: str, trace_id: str, span: Any,
               judgements: Sequence[Judgement] = ()) -> None:
        with self._cond:
            self._queue.append(_Pending(tracking_uri, experiment_id, run_id, trace_id, span, judgements))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="agility-trace-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self) -> int:
        """Wait until every submitted trace is written; returns how many could not be written (logged)."""
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait()
        failures, self._failures = self._failures, _Failures()
        if failures.count:
            logger.warning("%d sample traces could not be written to MLflow (%s); the run's results are complete", failures.count, failures.first)
        return failures.count

    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if not self._cond.wait(timeout=5.0) and not self._queue:
                        self._thread = None
                        return  # idle: a later submit starts a new thread
                batch, self._queue = self._queue[: self._chunk], self._queue[self._chunk :]
                self._busy = True
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure, or flush() would wait forever
                self._failures.add(len(batch), exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def prepare(self, tracking_uri: str) -> None:
        """Start the helper process for a database store now, while no other thread is mid-call."""
        with self._cond:
            if _is_database(tracking_uri) and self._helper is None:
                self._helper = _Helper.start()

    def _write(self, batch: list[_Pending]) -> None:
        groups: dict[tuple[str, str, str], list[_Pending]] = {}
        for pending in batch:
            groups.setdefault((pending.tracking_uri, pending.experiment_id, pending.run_id), []).append(pending)
        for (tracking_uri, experiment_id, run_id), items in groups.items():
            trace_ids, spans = [item.trace_id for item in items], [item.span for item in items]
            judgements = [(item.trace_id, judgement) for item in items for judgement in item.judgements]
            helper = self._helper if _is_database(tracking_uri) else None
            try:
                if helper is not None and helper.alive:
                    helper.write(tracking_uri, experiment_id, run_id, trace_ids, spans, judgements)
                else:
                    write_traces(tracking_uri, experiment_id, run_id, trace_ids, spans, judgements)
            except Exception as exc:  # noqa: BLE001 - a lost trace must not sink the run: counted and reported
                self._failures.add(len(items), exc)
            else:
                logger.debug("wrote %d sample traces of run %s", len(items), run_id)


def write_traces(tracking_uri: str, experiment_id: str, run_id: str, trace_ids: list[str], spans: list[Any],
                 judgements: Sequence[tuple[str, Judgement]] = ()) -> None:
    """Store ``spans`` (one trace each) in one ``log_spans`` call, link their traces to ``run_id``, then
    log each ``(trace_id, judgement)`` as an LLM-judge feedback on its trace."""
    from mlflow import MlflowClient
    from mlflow.entities import AssessmentError, AssessmentSource, Feedback
    from mlflow.store.tracking import MAX_TRACE_LINKS_PER_REQUEST
    from mlflow.tracing.client import TracingClient

    tracing = TracingClient(tracking_uri)
    tracing.log_spans(experiment_id, spans)
    client = MlflowClient(tracking_uri)
    for start in range(0, len(trace_ids), MAX_TRACE_LINKS_PER_REQUEST):
        client.link_traces_to_run(trace_ids[start : start + MAX_TRACE_LINKS_PER_REQUEST], run_id)
    for trace_id, judgement in judgements:
        failure = AssessmentError(error_code="JUDGE_ERROR", error_message=judgement.error[:1000]) if judgement.error else None
        tracing.log_assessment(trace_id, Feedback(name=judgement.name, value=judgement.value, rationale=judgement.rationale or None,
                                                  source=AssessmentSource(source_type="LLM_JUDGE", source_id=judgement.judge), error=failure))


def _is_database(tracking_uri: str) -> bool:
    return tracking_uri.partition(":")[0].partition("+")[0] in {"sqlite", "postgresql", "mysql", "mssql"}


class _Helper:
    """A process forked from this one (so MLflow is already imported) that runs :func:`write_traces` for it.

    One batch at a time over a pipe: the writer thread sends it and waits for the answer, so
    :meth:`TraceWriter.flush` still means "stored". If the process cannot start or dies, the
    thread writes in-process instead. If it gives no answer for ``timeout_s`` (a store that never
    lets go of a lock, say) it is killed and that batch counted as lost, so a run never hangs on
    its traces; the batch is not written again, as the helper may have stored part of it.
    """

    # A batch of 250 traces takes ~0.6 s to SQLite here; minutes of silence mean it is stuck.
    timeout_s = 300.0

    def __init__(self, process: Any, connection: Any) -> None:
        self._process = process
        self._connection = connection
        self.alive = True

    @classmethod
    def start(cls) -> _Helper | None:
        import multiprocessing
        import sys

        if not sys.platform.startswith("linux"):  # fork is only safe enough on Linux (macOS's system libraries refuse it)
            return None
        try:
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported before the fork, never in the child
            import mlflow.tracing.client  # noqa: F401

            context = multiprocessing.get_context("fork")
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, ours), name="agility-trace-writer", daemon=True)
            process.start()
            theirs.close()
        except Exception as exc:  # noqa: BLE001 - e.g. a daemonic process may not have children: write in-process
            logger.debug("trace writer process not started (%s): writing traces in-process", exc)
            return None
        return cls(process, ours)

    def write(self, tracking_uri: str, experiment_id: str, run_id: str, trace_ids: list[str], spans: list[Any],
              judgements: Sequence[tuple[str, Judgement]] = ()) -> None:
        try:
            self._connection.send((tracking_uri, experiment_id, run_id, trace_ids, spans, judgements))
            if not self._connection.poll(self.timeout_s):
                self._stop()
                raise _HelperError(f"the trace writer process gave no answer in {self.timeout_s:.0f} s and was stopped")
            error = self._connection.recv()
        except (EOFError, OSError):
            self.alive = False
            logger.debug("trace writer process gone: writing traces in-process")
            write_traces(tracking_uri, experiment_id, run_id, trace_ids, spans, judgements)
            return
        if error is not None:
            raise _HelperError(error)

    def _stop(self) -> None:
        self.alive = False
        self._process.kill()
        self._process.join(10)
        self._connection.close()


class _HelperError(Exception):
    """A write that failed in the helper process, described there."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _serve(connection: Any, parent_end: Any) -> None:
    """The helper process: write each batch received, answer ``None`` or the error, until the parent goes."""
    import signal

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    parent_end.close()  # else the pipe never reports the parent gone
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; the pipe closing ends this process
    # The parent's engines came along with the fork: drop their pooled connections without closing
    # them (SQLAlchemy's recipe for forked processes); this process opens its own.
    SqlAlchemyStore._engine_map_lock = threading.Lock()
    for engine in list(SqlAlchemyStore._engine_map.values()):
        engine.dispose(close=False)
    while True:
        try:
            batch = connection.recv()
        except (EOFError, OSError):
            return
        try:
            write_traces(*batch)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which counts the lost traces
            connection.send(_describe(exc))
        else:
            connection.send(None)


_writer = TraceWriter()


def submit(tracking_uri: str, experiment_id: str, run_id: str, trace_id: str, span: Any, judgements: Sequence[Judgement] = ()) -> None:
    """Queue one sample span, and the judge's feedback on it, for the process's writer."""
    _writer.submit(tracking_uri, experiment_id, run_id, trace_id, span, judgements)


def flush() -> int:
    """Wait for the process's writer; the number of traces that could not be written."""
    return _writer.flush()


def prepare(tracking_uri: str) -> None:
    """Get the process's writer ready for traces to ``tracking_uri``; call it before the calls' threads start."""
    _writer.prepare(tracking_uri)
