"""Sample traces written in bulk: one per sample, linked to its run, with the call's timing, tokens and cost."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from agility_mlflow import _trace_writer, tracking
from agility_mlflow.evaluation import run_project
from tests.helpers import GOLDEN_ROWS, write_project

PRICING = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}


def test_replayed_run_has_one_trace_per_sample_as_mlflow_shows_it(tmp_path: Path) -> None:
    config = write_project(tmp_path, pricing=PRICING)
    (source,) = run_project(config, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment_id = client.get_run(source.run_id).info.experiment_id

    traces = mlflow.search_traces(locations=[experiment_id], run_id=source.run_id, return_type="list")
    by_sample = {t.data.spans[0].attributes["agility.sample_id"]: t for t in traces}
    assert sorted(by_sample) == ["q1", "q2", "q3"] and len(traces) == 3
    for row in GOLDEN_ROWS:
        trace = by_sample[row["sample_id"]]
        info, (span,) = trace.info, trace.data.spans
        tokens_in, tokens_out = int(row["input_token_source_llm"]), int(row["output_token_source_llm"])
        assert info.state.value == "OK" and info.tags["mlflow.traceName"] == "source"
        assert info.token_usage == {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
        cost = json.loads(info.trace_metadata["mlflow.trace.cost"])
        assert cost["input_cost"] == pytest.approx(tokens_in * 0.15 / 1e6) and cost["output_cost"] == pytest.approx(tokens_out * 0.6 / 1e6)
        assert row["question"] in info.request_preview and info.response_preview == json.dumps(row["answer_source_llm"])
        assert span.span_type == "CHAT_MODEL" and span.outputs == row["answer_source_llm"]
        assert span.inputs["messages"][0] == {"role": "system", "content": "You are a financial analyst."}
        assert span.attributes["mlflow.llm.model"] == "gpt-4o-mini" and span.attributes["agility.score.exact_match"] in (0.0, 1.0)


def test_a_failed_sample_is_an_error_trace(tmp_path: Path) -> None:
    tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", "errors")
    with mlflow.start_run() as run:
        start = time.time_ns()
        trace_id = tracking.log_sample_trace(tracking.SampleCall(
            name="m/p", provider="openai", model_id="m", messages=[{"role": "user", "content": "hi"}], output=None,
            error="ProviderError: timed out", start_ns=start, end_ns=start + 2_000_000, input_tokens=None, output_tokens=None,
            attributes={"agility.sample_id": "s1"},
        ))
        tracking.flush_traces()
    trace = mlflow.get_trace(trace_id)
    assert trace.info.state.value == "ERROR" and trace.info.token_usage is None
    assert trace.data.spans[0].outputs == {"error": "ProviderError: timed out"}
    assert [t.info.trace_id for t in mlflow.search_traces(run_id=run.info.run_id, return_type="list")] == [trace_id]


def test_a_write_that_fails_is_counted_and_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path / 'no-such-folder' / 'mlflow.db'}"  # a store that cannot be opened
    call = _trace_writer.SampleCall(name="m", provider="openai", model_id="m", messages=[], output="x", error=None, start_ns=1,
                                    end_ns=2, input_tokens=1, output_tokens=1, attributes={})
    spans = [_trace_writer.sample_span(call) for _ in range(3)]
    for trace_id, span in spans:
        _trace_writer.submit(uri, "1", "no-such-run", trace_id, span)
    with caplog.at_level(logging.WARNING, logger="agility_mlflow._trace_writer"):
        assert _trace_writer.flush() == 3
    assert "3 sample traces could not be written to MLflow" in caplog.text
    assert _trace_writer.flush() == 0  # reported once


def test_the_writer_survives_an_unexpected_failure_and_flush_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: _trace_writer.TraceWriter, batch: list) -> None:
        raise ImportError("no mlflow here")

    monkeypatch.setattr(_trace_writer.TraceWriter, "_write", broken)
    writer = _trace_writer.TraceWriter(chunk=2)
    for number in range(5):
        writer.submit("sqlite:///unused.db", "1", "run", f"tr-{number}", span=None)
    assert writer.flush() == 5  # every batch failed, none hung the flush


def _stored_traces(uri: str, count: int) -> tuple[str, str, list[str]]:
    """``count`` sample spans of a new run in ``uri``'s store: (experiment id, run id, trace ids), nothing written yet."""
    tracking.configure(uri, "helper")
    with mlflow.start_run() as run:
        pass
    calls = [_trace_writer.SampleCall(name="m/p", provider="openai", model_id="m", messages=[{"role": "user", "content": f"q{i}"}],
                                      output=f"a{i}", error=None, start_ns=10**9, end_ns=2 * 10**9, input_tokens=3, output_tokens=i,
                                      attributes={"agility.sample_id": f"s{i}"}) for i in range(count)]
    return run.info.experiment_id, run.info.run_id, [_trace_writer.sample_span(call) for call in calls]  # type: ignore[return-value]


def test_a_database_store_is_written_by_the_helper_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, run_id, spans = _stored_traces(uri, 4)
    writer = _trace_writer.TraceWriter()
    writer.prepare(uri)

    def in_this_process(*args: object) -> None:
        raise AssertionError("written in the calls' process")

    monkeypatch.setattr(_trace_writer, "write_traces", in_this_process)  # the forked helper keeps the real one
    for trace_id, span in spans:
        writer.submit(uri, experiment_id, run_id, trace_id, span)
    assert writer.flush() == 0
    traces = mlflow.search_traces(run_id=run_id, return_type="list")
    assert sorted(t.info.trace_id for t in traces) == sorted(trace_id for trace_id, _ in spans)
    assert sorted(t.info.token_usage["output_tokens"] for t in traces) == [0, 1, 2, 3]
    assert {t.data.spans[0].attributes["agility.sample_id"] for t in traces} == {"s0", "s1", "s2", "s3"}


def test_without_its_helper_process_the_writer_writes_itself(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, run_id, spans = _stored_traces(uri, 3)
    writer = _trace_writer.TraceWriter()
    writer.prepare(uri)
    helper = writer._helper
    assert helper is not None
    helper._process.kill()
    helper._process.join(10)
    for trace_id, span in spans:
        writer.submit(uri, experiment_id, run_id, trace_id, span)
    assert writer.flush() == 0 and not helper.alive
    assert len(mlflow.search_traces(run_id=run_id, return_type="list")) == 3


def test_a_helper_process_that_hangs_is_stopped_and_its_batch_counted_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, run_id, spans = _stored_traces(uri, 3)
    real_write = _trace_writer.write_traces
    monkeypatch.setattr(_trace_writer, "write_traces", lambda *args: time.sleep(3600))  # what the forked helper will run
    monkeypatch.setattr(_trace_writer._Helper, "timeout_s", 1.0)
    writer = _trace_writer.TraceWriter(chunk=2)
    writer.prepare(uri)
    helper = writer._helper
    assert helper is not None
    monkeypatch.setattr(_trace_writer, "write_traces", real_write)  # this process writes for real once the helper is gone
    with writer._cond:  # all three queued before the writer thread takes its first batch
        for trace_id, span in spans:
            writer.submit(uri, experiment_id, run_id, trace_id, span)
    started = time.monotonic()
    assert writer.flush() == 2  # the first batch of 2, sent to the stuck helper, is lost; the third trace is written here
    assert time.monotonic() - started < 30 and not helper.alive and not helper._process.is_alive()
    assert [t.info.trace_id for t in mlflow.search_traces(run_id=run_id, return_type="list")] == [spans[2][0]]


def test_the_judges_feedback_goes_with_its_trace_through_the_helper_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, run_id, spans = _stored_traces(uri, 2)
    writer = _trace_writer.TraceWriter()
    writer.prepare(uri)
    assert writer._helper is not None
    monkeypatch.setattr(_trace_writer, "write_traces", lambda *args: pytest.fail("written in the calls' process"))
    writer.submit(uri, experiment_id, run_id, *spans[0], [_trace_writer.Judgement("llm_judge", 8.0, "Right figure.", None, "openai:gpt-4o")])
    writer.submit(uri, experiment_id, run_id, *spans[1], [_trace_writer.Judgement("llm_judge", None, None, "no usable reply", "openai:gpt-4o")])
    assert writer.flush() == 0
    feedback = {t.info.trace_id: a for t in mlflow.search_traces(run_id=run_id, return_type="list") for a in t.info.assessments}
    first, second = feedback[spans[0][0]], feedback[spans[1][0]]
    assert (first.name, first.value, first.rationale, first.source.source_type, first.source.source_id) == (
        "llm_judge", 8.0, "Right figure.", "LLM_JUDGE", "openai:gpt-4o")
    assert second.value is None and second.error.error_message == "no usable reply"
