"""The OpenAI Batch API on the tests' OpenAI stand-in (``tests/openai_server.py``): files and batches.

``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}`` and ``GET /v1/batches``, as the real ``openai`` client calls them. A batch answers
``in_progress`` to ``polls`` retrievals, then is processed: each input line's body goes to the server's
``answer`` (the same as for a chat completion), its reply to the output file; an ``answer`` that raises
``ValueError`` fails that request (HTTP 400 with the exception's text, in the error file).

Example:
    >>> with start_standin(latency_s=0.0) as server:  # doctest: +SKIP
    ...     server.batch_api.polls = 3
    ...     ...  # an OpenAI client on server.url submits a batch
    ...     assert server.batch_api.submissions == 1
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import default
from typing import Any


class BatchAPI:
    """Files and batches kept in memory.

    Attributes:
        polls: Retrievals a batch stays ``in_progress`` (its completed count grows with each).
        submissions, lists: Batches created; ``GET /v1/batches`` listings.
        files, batches: Uploaded and written files, and batches, by id.
    """

    def __init__(self, answer: Callable[[dict[str, Any]], str], polls: int = 1) -> None:
        self.answer = answer
        self.polls = polls
        self.submissions = 0
        self.lists = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, content_type: str, raw: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) of one request under ``/v1/files`` or ``/v1/batches``."""
        path = path.split("?")[0]
        if method == "POST" and path.endswith("/files"):
            return self._json(self.upload(content_type, raw))
        if method == "POST" and path.endswith("/batches"):
            return self._json(self.create(json.loads(raw)))
        if path.endswith("/batches"):
            with self._lock:
                self.lists += 1
                data = [_view(batch) for batch in reversed(self.batches.values())]
            return self._json({"object": "list", "data": data, "has_more": False})
        if "/batches/" in path:
            return self._json(self.retrieve(path.rsplit("/", 1)[-1]))
        if path.endswith("/content"):
            return 200, self.files[path.split("/")[-2]], "application/octet-stream"
        return 404, json.dumps({"error": {"message": f"no route {method} {path}"}}).encode(), "application/json"

    def upload(self, content_type: str, raw: bytes) -> dict[str, Any]:
        message = BytesParser(policy=default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        data = parts["file"].get_payload(decode=True)
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": 0, "filename": parts["file"].get_filename(),
                "purpose": parts["purpose"].get_payload(decode=True).decode(), "status": "processed"}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.submissions += 1
            batch_id = f"batch_{self.submissions}"
            total = len(self.files[body["input_file_id"]].splitlines())
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None, "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"], "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": 0, "metadata": body.get("metadata"), "request_counts": {"total": total, "completed": 0, "failed": 0}, "_polls": 0,
            }
            return _view(self.batches[batch_id])

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        """The batch as the API shows it; processed (output and error files written) once its polls are used up."""
        with self._lock:
            batch = self.batches[batch_id]
            batch["_polls"] += 1
            if batch["status"] in ("validating", "in_progress"):
                if batch["_polls"] > self.polls:
                    self._process(batch)
                else:
                    batch["status"] = "in_progress"
                    batch["request_counts"]["completed"] = batch["request_counts"]["total"] * batch["_polls"] // (self.polls + 1)
            return _view(batch)

    def _process(self, batch: dict[str, Any]) -> None:
        outputs, errors = [], []
        for line in self.files[batch["input_file_id"]].decode("utf-8").splitlines():
            record = json.loads(line)
            body = record["body"]
            try:
                text = self.answer(body)
            except ValueError as exc:  # a scripted per-request failure
                error = {"error": {"message": str(exc), "type": "invalid_request_error", "code": "bad_request"}}
                errors.append({"id": "r", "custom_id": record["custom_id"], "response": {"status_code": 400, "body": error}, "error": None})
                continue
            usage = {"prompt_tokens": sum(len(m["content"]) // 4 for m in body["messages"]), "completion_tokens": len(text) // 4}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            completion = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "usage": usage,
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
            outputs.append({"id": "r", "custom_id": record["custom_id"], "response": {"status_code": 200, "body": completion}, "error": None})
        for kind, lines in (("output_file_id", outputs), ("error_file_id", errors)):
            if lines:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
                batch[kind] = file_id
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        batch["status"] = "completed"

    @staticmethod
    def _json(payload: dict[str, Any]) -> tuple[int, bytes, str]:
        return 200, json.dumps(payload).encode(), "application/json"


def _view(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if not key.startswith("_")}
