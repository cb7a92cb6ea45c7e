"""The OpenAI Batch API: one input file of chat requests, one batch, its output and error files read back.

Each record is the request :func:`~agility_mlflow.backends.openai.chat_request` sends on demand, as a
``/v1/chat/completions`` line of the input file. The batch carries the submission's name in its
metadata (``agility_token``), so a run killed between creating the batch and persisting its id finds it.

Example:
    >>> backend = OpenAIBatchBackend("gpt-4o-mini", base_url="http://127.0.0.1:8000/v1", api_key="x")  # doctest: +SKIP
    >>> backend.encode("R0000000000", [{"role": "user", "content": "2+2?"}], {"max_tokens": 8})["url"]  # doctest: +SKIP
    '/v1/chat/completions'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.backends._base import Generation, Message
from agility_mlflow.backends._batch import BatchBackend, BatchLimits, JobStatus
from agility_mlflow.backends.openai import _client, _provider_errors, chat_request

# OpenAI Batch API limits (platform docs, "Batch API"): 50,000 requests and 200 MB per input file; no minimum.
LIMITS = BatchLimits(min_records=1, max_records=50_000, max_input_bytes=200_000_000,
                     where="OpenAI Batch API limits: at most 50,000 requests and 200 MB per batch")
_RUNNING = {"validating", "in_progress", "finalizing", "cancelling"}
ENDPOINT = "/v1/chat/completions"


class OpenAIBatchBackend(BatchBackend):
    """One OpenAI batch per batch of samples (``completion_window`` 24h)."""

    provider = "openai"
    limits = LIMITS

    def __init__(self, model_id: str, *, base_url: str | None = None, api_key: str | None = None, api_key_env: str | None = None,
                 poll_s: float = 30.0, timeout_s: float = 120.0) -> None:
        super().__init__(model_id)
        self.base_url, self._client = _client(model_id, base_url, api_key, api_key_env, timeout_s)
        self.poll_s = poll_s

    def encode(self, record_id: str, messages: Sequence[Message], params: Mapping[str, Any]) -> dict[str, Any]:
        request = chat_request(self.model_id, messages, params, self._client.chat.completions.create)
        body = {k: v for k, v in request.items() if not k.startswith("extra_") and k != "timeout"}
        body.update(request.get("extra_body") or {})  # a batch line has one body: SDK-only fields go inline
        return {"custom_id": record_id, "method": "POST", "url": ENDPOINT, "body": body}

    def submit(self, key: str, lines: bytes, pending: Mapping[str, Any]) -> dict[str, Any]:
        token = pending["token"]
        with _provider_errors(self.model_id):
            for batch in self._client.batches.list(limit=100):  # created by a submission killed before it saved the id
                if (batch.metadata or {}).get("agility_token") == token:
                    return {"job_id": batch.id}
            upload = self._client.files.create(file=(f"{token}.jsonl", lines), purpose="batch")
            batch = self._client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                                                metadata={"agility_token": token})
        return {"job_id": batch.id, "input_file_id": upload.id}

    def status(self, job: Mapping[str, Any]) -> JobStatus:
        with _provider_errors(self.model_id):
            batch = self._client.batches.retrieve(job["job_id"])
        counts = batch.request_counts
        done = (counts.completed + counts.failed) if counts else 0
        # An expired batch's finished requests are in its files: read those, the rest are per-sample errors.
        finished = batch.status == "completed" or (batch.status == "expired" and (batch.output_file_id or batch.error_file_id))
        state = "running" if batch.status in _RUNNING else "completed" if finished else "failed"
        errors = getattr(batch.errors, "data", None) or []
        message = "; ".join(f"{e.code}: {e.message}" for e in errors[:3])
        return JobStatus(state, batch.status, done, counts.total if counts else 0, message)

    def results(self, job: Mapping[str, Any]) -> dict[str, Generation | str]:
        with _provider_errors(self.model_id):
            batch = self._client.batches.retrieve(job["job_id"])
            texts = [self._client.files.content(file_id).text for file_id in (batch.output_file_id, batch.error_file_id) if file_id]
        return dict(_parse(line) for text in texts for line in text.splitlines() if line.strip())

    def cache_identity(self) -> Mapping[str, Any]:
        return {"base_url": self.base_url or "https://api.openai.com/v1", "mode": "batch"}

    def close(self) -> None:
        self._client.close()


def _parse(line: str) -> tuple[str, Generation | str]:
    """One output or error line: the chat completion as a Generation, or the request's error as text."""
    record = json.loads(line)
    response = record.get("response") or {}
    body = response.get("body") or {}
    if record.get("error") or response.get("status_code") != 200:
        error = record.get("error") or body.get("error") or {}
        return record["custom_id"], (f"batch request failed: HTTP {response.get('status_code', '?')}: "
                                     f"{error.get('code') or error.get('type') or ''} {error.get('message', 'no output')}".replace(":  ", ": "))
    choice = body["choices"][0]
    usage = body.get("usage") or {}
    return record["custom_id"], Generation(
        text=(choice.get("message") or {}).get("content") or "",
        latency_s=None,  # a batch's wall time says nothing about one answer
        ttft_s=None,
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        finish_reason=choice.get("finish_reason"),
        reasoning_tokens=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens"),
        cached_input_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
    )

