"""Amazon Bedrock batch inference: JSONL records in S3, ``CreateModelInvocationJob``, outputs read back from S3.

Records use the Converse format (``modelInvocationType: Converse``), so the request of each sample is
exactly the one :func:`~agility_mlflow.backends.bedrock.converse_request` sends on demand, and every
Bedrock chat model works the same way. The job reads ``<s3_uri>/agility/<key>/input/records.jsonl`` and
writes ``<s3_uri>/agility/<key>/output/<job id>/records.jsonl.out``: one line per record with its
``modelOutput`` (a Converse response) or its ``error``.

Endpoints follow botocore's standard variables: ``AWS_ENDPOINT_URL_BEDROCK`` (the control plane) and
``AWS_ENDPOINT_URL_S3`` point the clients at a VPC endpoint or a test server.

Example:
    >>> backend = BedrockBatchBackend("us.anthropic.claude-3-5-haiku-20241022-v1:0", s3_uri="s3://b/p",
    ...                               role_arn="arn:aws:iam::123456789012:role/batch", region="us-east-1")  # doctest: +SKIP
    >>> backend.encode("R0000000000", [{"role": "user", "content": "2+2?"}], {"max_tokens": 8})  # doctest: +SKIP
    {'recordId': 'R0000000000', 'modelInput': {'messages': [{'role': 'user', 'content': [{'text': '2+2?'}]}], 'inferenceConfig': {...}}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.backends._base import Generation, Message
from agility_mlflow.backends._batch import BatchBackend, BatchLimits, JobStatus
from agility_mlflow.backends.bedrock import _billed_usage, aws_session, bedrock_errors, converse_request

# Amazon Bedrock service quotas (AWS General Reference, "Batch inference"): defaults, the same for the
# chat models agility evaluates; the minimum is not adjustable.
LIMITS = BatchLimits(min_records=100, max_records=50_000, max_input_bytes=1_000_000_000,
                     where="Amazon Bedrock batch inference quotas: at least 100 records, at most 50,000 and 1 GB per job")
_RUNNING = {"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"}
_DONE = {"Completed", "PartiallyCompleted"}


class BedrockBatchBackend(BatchBackend):
    """One Bedrock model invocation job per batch.

    Args:
        model_id: A base model id or a cross-region inference profile.
        s3_uri: ``s3://bucket/prefix``: where input records go and outputs come back.
        role_arn: The service role Bedrock assumes to read and write ``s3_uri``.
        region: As for :class:`~agility_mlflow.backends.bedrock.BedrockBackend`.
        poll_s: Seconds between two status checks.
    """

    provider = "bedrock"
    limits = LIMITS

    def __init__(self, model_id: str, *, s3_uri: str, role_arn: str, region: str | None = None, poll_s: float = 30.0,
                 timeout_s: float = 120.0) -> None:
        super().__init__(model_id)
        from botocore.config import Config

        session, self.region = aws_session(region)
        self.bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
        self.prefix = prefix.strip("/")
        self.role_arn = role_arn
        self.poll_s = poll_s
        config = Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=timeout_s, read_timeout=timeout_s)
        self._bedrock = session.client("bedrock", region_name=self.region, config=config)
        self._s3 = session.client("s3", region_name=self.region, config=config)

    def encode(self, record_id: str, messages: Sequence[Message], params: Mapping[str, Any]) -> dict[str, Any]:
        request = converse_request(self.model_id, messages, params)
        request.pop("modelId")  # the job names the model once
        return {"recordId": record_id, "modelInput": request}

    def _uri(self, *parts: str) -> str:
        return "/".join(["s3:/", self.bucket, *([self.prefix] if self.prefix else []), *parts])

    def submit(self, key: str, lines: bytes, pending: Mapping[str, Any]) -> dict[str, Any]:
        folder = f"agility/{key[:24]}"
        token = pending["token"]
        input_uri = self._uri(folder, "input", "records.jsonl")
        with bedrock_errors(self.model_id):
            self._s3.put_object(Bucket=self.bucket, Key=input_uri.split("/", 3)[3], Body=lines)
            # Same name and token as an interrupted submission: Bedrock answers with the job it created then.
            response = self._bedrock.create_model_invocation_job(
                jobName=token, clientRequestToken=token, roleArn=self.role_arn, modelId=self.model_id, modelInvocationType="Converse",
                inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri, "s3InputFormat": "JSONL"}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": self._uri(folder, "output") + "/"}},
            )
        return {"job_id": response["jobArn"]}

    def status(self, job: Mapping[str, Any]) -> JobStatus:
        with bedrock_errors(self.model_id):
            info = self._bedrock.get_model_invocation_job(jobIdentifier=job["job_id"])
        status = info["status"]
        state = "running" if status in _RUNNING else "completed" if status in _DONE else "failed"
        return JobStatus(state, status, int(info.get("processedRecordCount") or 0), int(info.get("totalRecordCount") or 0),
                         info.get("message") or "")

    def results(self, job: Mapping[str, Any]) -> dict[str, Generation | str]:
        with bedrock_errors(self.model_id):
            info = self._bedrock.get_model_invocation_job(jobIdentifier=job["job_id"])
            out_uri = info["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
            bucket, _, prefix = out_uri.removeprefix("s3://").partition("/")
            job_folder = f"{prefix.rstrip('/')}/{job['job_id'].rsplit('/', 1)[-1]}/"
            answers: dict[str, Generation | str] = {}
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=job_folder):
                for entry in page.get("Contents", []):
                    if entry["Key"].endswith(".jsonl.out"):
                        body = self._s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read().decode("utf-8")
                        answers.update(_parse(line) for line in body.splitlines() if line.strip())
        return answers

    def cache_identity(self) -> Mapping[str, Any]:
        # Batch answers are the same model's answers; the endpoint still tells providers apart.
        return {"region": self.region, "endpoint_url": self._bedrock.meta.endpoint_url, "mode": "batch"}

    def close(self) -> None:
        self._bedrock.close()
        self._s3.close()


def _parse(line: str) -> tuple[str, Generation | str]:
    """One output line: the record's Converse response as a Generation, or its error as text."""
    record = json.loads(line)
    if record.get("error") or "modelOutput" not in record:
        error = record.get("error") or {}
        return record["recordId"], f"batch record failed: {error.get('errorCode', '?')}: {error.get('errorMessage', 'no output')}"
    output = record["modelOutput"]
    usage = output.get("usage") or {}
    content = ((output.get("output") or {}).get("message") or {}).get("content") or []
    return record["recordId"], Generation(
        text="".join(block.get("text", "") for block in content),
        latency_s=None,  # a batch job's wall time says nothing about one answer
        ttft_s=None,
        output_tokens=usage.get("outputTokens"),
        finish_reason=output.get("stopReason"),
        **_billed_usage(usage),
    )

