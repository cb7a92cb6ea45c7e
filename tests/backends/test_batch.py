"""``mode: batch``: `agility run` through Bedrock batch inference (moto's S3 server and a control-plane stand-in)
and the OpenAI Batch API (files and batches on the OpenAI stand-in), through the real boto3 and openai clients."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from agility_mlflow.backends import _batch
from agility_mlflow.cli import main
from agility_mlflow.evaluation import run_project
from tests.bedrock_batch_server import BatchServices, start_batch_services
from tests.helpers import GOLDEN_ROWS, REPO, write_project
from tests.openai_server import StandinServer, start_standin

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
ROLE = "arn:aws:iam::123456789012:role/agility-batch"
FILTERED = 13  # the sample whose record the provider fails


def _rows(n: int) -> list[dict[str, Any]]:
    base = GOLDEN_ROWS[0]
    return [{**base, "sample_id": f"s{i:03d}", "question": f"What is item {i}?", "answer_ground_truth": f"Item {i} is {i * 7}"}
            for i in range(n)]


def _reply(text: str) -> str:
    number = int(text.rsplit("item ", 1)[1].split("?")[0])
    if number == FILTERED:
        raise ValueError("The request was blocked by content filtering")
    return f"Item {number} is {number * 7}"


def _table(run_id: str, directory: Path) -> list[dict[str, Any]]:
    table = json.loads(Path(MlflowClient().download_artifacts(run_id, "eval_results.json", str(directory))).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


@pytest.fixture
def bedrock_batch(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchServices]:
    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGONLY0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-not-real")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with start_batch_services(_reply, polls=2) as services:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", services.s3_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", services.bedrock.url)
        yield services


def _bedrock_project(directory: Path, n: int, traces: bool = False) -> Path:
    candidate = {"name": "haiku-batch", "provider": "bedrock", "model_id": MODEL, "mode": "batch", "s3_uri": "s3://agility-batch/evals",
                 "role_arn": ROLE, "poll_s": 0.01, "params": {"max_tokens": 32}}
    return write_project(directory, rows=_rows(n), candidates=[candidate], prompts=[{"name": "qa", "template": "{{question}}"}],
                         metrics=["exact_match"], source=None, pricing={MODEL: {"input": 1.0, "output": 2.0}},
                         run={"concurrency": 2, "traces": traces})


def test_bedrock_batch_job_fills_the_per_sample_rows_at_batch_prices(
    bedrock_batch: BatchServices, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _bedrock_project(tmp_path, 100, traces=True)
    with caplog.at_level("INFO", logger="agility_mlflow"):
        (summary,) = run_project(config, progress=False, with_source=False)
    job = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job00000001"
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch job ")]
    assert progress == [f"batch job {job}: InProgress, 33/100 records processed", f"batch job {job}: PartiallyCompleted, 100/100 records processed"]
    standin = bedrock_batch.bedrock
    assert standin.submissions == 1
    created = next(body for method, path, body in standin.requests if method == "POST")
    assert (created["modelId"], created["roleArn"], created["modelInvocationType"]) == (MODEL, ROLE, "Converse")
    bucket, _, key = created["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].removeprefix("s3://").partition("/")
    records = bedrock_batch.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert len(records) == 100 and json.loads(records[0])["modelInput"]["messages"][0]["content"][0]["text"] == "What is item 0?"

    run = MlflowClient().get_run(summary.run_id)
    metrics, params = run.data.metrics, run.data.params
    assert (metrics["n_samples"], metrics["n_errors"]) == (100, 1)
    assert metrics["exact_match"] == 1.0  # every answer read back into its own sample's row
    rows = {row["sample_id"]: row for row in _table(summary.run_id, tmp_path)}
    assert "content filtering" in rows[f"s{FILTERED:03d}"]["error"] and rows[f"s{FILTERED:03d}"]["output"] is None
    ok = [row for row in rows.values() if row["error"] is None]
    # Latency is not measured in batch mode: no number in the rows, no percentile, and the run says why.
    assert {row["latency_s"] for row in ok} == {None} and {row["ttft_s"] for row in ok} == {None}
    assert not {"latency_p50_s", "latency_p95_s", "latency_mean_s", "ttft_p50_s"} & set(metrics)
    assert (params["mode"], params["latency"]) == ("batch", "not measured (batch inference)")
    traces = MlflowClient().search_traces(locations=[run.info.experiment_id], run_id=summary.run_id, max_results=200)
    assert len(traces) == 100 and {t.info.execution_time_ms for t in traces} == {0}  # never the job's wall time as a sample's
    # Tokens from the outputs, priced at the batch rate: half the configured on-demand price.
    assert rows["s000"]["input_tokens"] == 4 and rows["s000"]["output_tokens"] == 4
    assert (float(params["price_input_usd_per_mtok"]), float(params["price_output_usd_per_mtok"])) == (0.5, 1.0)
    assert params["pricing_source"] == "config, batch at 50% off"
    expected = sum(row["input_tokens"] * 0.5 + row["output_tokens"] * 1.0 for row in ok) / 1e6
    assert metrics["cost_usd_total"] == pytest.approx(expected)
    # The answers are cached: the same evaluation again submits nothing; the one failed record is too few for a job.
    (again,) = run_project(config, progress=False, with_source=False)
    assert standin.submissions == 1
    rerun = {row["sample_id"]: row for row in _table(again.run_id, tmp_path / "again")}
    assert rerun[f"s{FILTERED:03d}"]["error"] == ("not submitted: 1 uncached samples are below the batch minimum of 100 records "
                                                  "(the other 99 answers came from the cache)")
    assert MlflowClient().get_run(again.run_id).data.metrics["exact_match"] == 1.0
    assert not list((Path(os.environ["AGILITY_CACHE_DIR"]) / "batch-jobs").glob("*.json"))  # read back: nothing left to resume


def test_an_interrupted_bedrock_batch_run_resumes_its_job_without_resubmitting(
    bedrock_batch: BatchServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _bedrock_project(tmp_path, 100)
    real_sleep = time.sleep

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_batch.time, "sleep", interrupt)  # Ctrl-C while the job runs
    with pytest.raises(KeyboardInterrupt):
        run_project(config, progress=False, with_source=False)
    jobs = list((Path(os.environ["AGILITY_CACHE_DIR"]) / "batch-jobs").glob("*.json"))
    assert len(jobs) == 1 and json.loads(jobs[0].read_text())["job_id"].endswith("/job00000001")
    (first,) = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("test-migration").experiment_id])
    assert first.info.status == "KILLED"

    monkeypatch.setattr(_batch.time, "sleep", real_sleep)
    (summary,) = run_project(config, progress=False, with_source=False)
    assert bedrock_batch.bedrock.submissions == 1  # the same job, polled to its end
    assert [m for m, *_ in bedrock_batch.bedrock.requests].count("POST") == 1
    assert MlflowClient().get_run(summary.run_id).data.metrics["n_samples"] == 100


def test_a_run_killed_between_submitting_and_saving_the_job_id_finds_its_job(
    bedrock_batch: BatchServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _bedrock_project(tmp_path, 100)
    real_put = _batch.JobStore.put

    def killed_once_submitted(self: _batch.JobStore, key: str, job: dict[str, Any]) -> None:
        if "job_id" in job:
            raise KeyboardInterrupt  # the job exists at Bedrock; its id never reached the disk
        real_put(self, key, job)

    monkeypatch.setattr(_batch.JobStore, "put", killed_once_submitted)
    with pytest.raises(KeyboardInterrupt):
        run_project(config, progress=False, with_source=False)
    monkeypatch.setattr(_batch.JobStore, "put", real_put)
    (summary,) = run_project(config, progress=False, with_source=False)
    creates = [body for method, _, body in bedrock_batch.bedrock.requests if method == "POST"]
    assert len(creates) == 2 and creates[0]["clientRequestToken"] == creates[1]["clientRequestToken"]  # the same submission, repeated
    assert bedrock_batch.bedrock.submissions == 1  # which Bedrock answers with the job it already made
    assert MlflowClient().get_run(summary.run_id).data.metrics["n_samples"] == 100


def test_a_failed_bedrock_job_fails_the_run_and_the_next_run_submits_anew(bedrock_batch: BatchServices, tmp_path: Path) -> None:
    config = _bedrock_project(tmp_path, 100)
    bedrock_batch.bedrock.fail_message = "Amazon Bedrock could not read s3://agility-batch/evals: check the service role's permissions"
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {MODEL}: batch job arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job00000001 ended Failed: "
        "Amazon Bedrock could not read s3://agility-batch/evals: check the service role's permissions")
    (run,) = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("test-migration").experiment_id], "tags.`agility.role` = 'candidate'")
    assert run.info.status == "FAILED"
    assert not list((Path(os.environ["AGILITY_CACHE_DIR"]) / "batch-jobs").glob("*.json"))  # nothing left to resume
    bedrock_batch.bedrock.fail_message = None
    (summary,) = run_project(config, progress=False, with_source=False)
    assert bedrock_batch.bedrock.submissions == 2
    assert MlflowClient().get_run(summary.run_id).data.metrics["n_errors"] == 1


def test_the_run_table_says_latency_was_not_measured() -> None:
    from agility_mlflow.cli import summary_table
    from agility_mlflow.evaluation import RunSummary

    table = summary_table([RunSummary("r1", "candidate", "haiku-batch", "prompts:/qa/1", {"n_samples": 100.0, "cost_usd_total": 0.002})], [])
    assert table.splitlines()[1].split()[4:6] == ["not", "measured"]


def test_a_bedrock_batch_below_the_minimum_is_refused_before_anything_is_sent(bedrock_batch: BatchServices, tmp_path: Path) -> None:
    config = _bedrock_project(tmp_path, 99)
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: agility.yaml: candidate 'haiku-batch': mode: batch needs at least 100 samples per job (Amazon Bedrock batch "
                     "inference quotas: at least 100 records, at most 50,000 and 1 GB per job), got 99: use mode: on_demand for small sets"]
    assert bedrock_batch.bedrock.requests == []
    assert bedrock_batch.s3.list_objects_v2(Bucket="agility-batch").get("KeyCount") == 0


def test_bedrock_batch_needs_its_bucket_and_role(tmp_path: Path) -> None:
    candidate = {"name": "b", "provider": "bedrock", "model_id": MODEL, "mode": "batch", "s3_uri": "s3://agility-batch/evals"}
    config = write_project(tmp_path, candidates=[candidate])
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {config}: key 'candidates[0]': Bedrock batch inference needs 'role_arn' (the service role ARN)"


@pytest.fixture
def openai_batch() -> Iterator[StandinServer]:
    with start_standin(latency_s=0.0, answer=lambda request: _reply(str(request["messages"][-1]["content"]))) as server:
        server.batch_api.polls = 2
        yield server


def _openai_project(directory: Path, base_url: str, poll_s: float = 0.01, **overrides: Any) -> Path:
    candidate = {"name": "mini-batch", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": base_url, "api_key": "sk-test",
                 "mode": "batch", "poll_s": poll_s, "params": {"max_tokens": 32}}
    return write_project(directory, rows=_rows(20), candidates=[candidate], prompts=[{"name": "qa", "template": "{{question}}"}],
                         metrics=["exact_match"], source=None, run={"concurrency": 2, "traces": False},
                         pricing={"gpt-4o-mini": {"input": 0.15, "output": 0.60, "batch_input": 0.05, "batch_output": 0.25}}, **overrides)


def test_openai_batch_reads_output_and_error_files_into_rows(openai_batch: StandinServer, tmp_path: Path) -> None:
    config = _openai_project(tmp_path, openai_batch.url)
    (summary,) = run_project(config, progress=False, with_source=False)
    assert openai_batch.batch_api.submissions == 1 and openai_batch.calls == 0
    (batch,) = openai_batch.batch_api.batches.values()
    assert batch["endpoint"] == "/v1/chat/completions" and batch["request_counts"] == {"total": 20, "completed": 19, "failed": 1}
    line = json.loads(openai_batch.batch_api.files[batch["input_file_id"]].splitlines()[0])
    assert line["body"]["messages"] == [{"role": "user", "content": "What is item 0?"}] and line["body"]["max_tokens"] == 32
    run = MlflowClient().get_run(summary.run_id)
    metrics = run.data.metrics
    assert (metrics["n_samples"], metrics["n_errors"], metrics["exact_match"]) == (20, 1, 1.0)
    rows = {row["sample_id"]: row for row in _table(summary.run_id, tmp_path)}
    assert rows[f"s{FILTERED:03d}"]["error"] == "batch request failed: HTTP 400: bad_request The request was blocked by content filtering"
    ok = [row for row in rows.values() if row["error"] is None]
    assert {row["latency_s"] for row in ok} == {None} and "latency_p50_s" not in metrics
    assert run.data.params["pricing_source"] == "config, batch price"
    assert metrics["cost_usd_total"] == pytest.approx(sum(r["input_tokens"] * 0.05 + r["output_tokens"] * 0.25 for r in ok) / 1e6)


def test_a_killed_openai_batch_run_resumes_by_batch_id(openai_batch: StandinServer, tmp_path: Path) -> None:
    """A real SIGKILL of `agility run` while its batch runs; the next run polls the same batch and submits nothing."""
    openai_batch.batch_api.polls = 10_000  # the batch runs until the test lets it finish
    config = _openai_project(tmp_path, openai_batch.url, poll_s=0.05)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "agility_mlflow", "run", str(config)], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(b["_polls"] >= 2 for b in list(openai_batch.batch_api.batches.values())):  # submitted, and being polled
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert openai_batch.batch_api.submissions == 1
    openai_batch.batch_api.polls = 0
    (summary,) = run_project(config, progress=False, with_source=False)
    assert openai_batch.batch_api.submissions == 1 and len(openai_batch.batch_api.files) == 3  # one input, one output, one error file
    assert openai_batch.batch_api.lists == 1  # resumed by its saved id: only the first submission looked for an orphaned batch
    metrics = MlflowClient().get_run(summary.run_id).data.metrics
    assert (metrics["n_samples"], metrics["n_errors"]) == (20, 1) and not math.isnan(metrics["cost_usd_total"])


def test_a_registered_batch_candidate_is_served_on_demand(openai_batch: StandinServer) -> None:
    import types

    import pandas as pd

    from agility_mlflow.registry._model import AgilityModel

    model = {"provider": "openai", "model_id": "gpt-4o-mini", "base_url": openai_batch.url, "mode": "batch", "params": {"max_tokens": 32}}
    config = {"model": model, "template": "{{question}}", "system": None, "format": "mustache", "prompt_name": "qa", "prompt_uri": "prompts:/qa/1"}
    served = AgilityModel()
    served.load_context(types.SimpleNamespace(model_config=config))
    assert served.predict(None, pd.DataFrame([{"question": "What is item 3?"}])) == ["Item 3 is 21"]
    assert (openai_batch.calls, openai_batch.batch_api.submissions) == (1, 0)  # a chat completion, no batch


def test_a_sweep_trial_of_a_batch_candidate_is_one_job(openai_batch: StandinServer, tmp_path: Path) -> None:
    from agility_mlflow.sweep import run_sweep

    settings = {"params": {"max_tokens": {"choices": [16, 32]}}, "objective": "exact_match", "slices": 4, "n_trials": 2, "sampler": "grid"}
    config = _openai_project(tmp_path, openai_batch.url, sweep=settings)
    result = run_sweep(config, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)
    assert result.n_trials == 2
    assert openai_batch.batch_api.submissions == 2  # one job per trial, not one per slice
    assert sorted(len(openai_batch.batch_api.files[b["input_file_id"]].splitlines()) for b in openai_batch.batch_api.batches.values()) == [20, 20]
