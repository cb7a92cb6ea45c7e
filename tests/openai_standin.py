"""An OpenAI-protocol stand-in on 127.0.0.1 for the real ``openai`` client: chat completions (streamed or
not), embeddings, and the Batch API (files and batches, processed with the same replies), with scripted
replies and scripted faults.

Example:
    >>> server = OpenAIStandIn(lambda messages: "Paris")  # doctest: +SKIP
    >>> base_url = server.start()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[list[dict[str, Any]]], str]


class OpenAIStandIn:
    """Answers ``/v1/chat/completions`` with ``reply(messages)`` and ``/v1/embeddings`` with a fixed vector per text.

    Args:
        reply: The answer text for a conversation.
        break_streams: The first this many streamed answers send their first chunk, then the
            connection is dropped mid-answer (as a reset or a proxy timeout does).

    Attributes:
        chat_calls, embedding_calls, broken_streams: Requests received so far.
        batch_submissions, batch_lists, files, batches: Batches created, batch listings, uploaded files and batches by id. A batch
            line whose ``reply`` raises is answered as a failed request (HTTP 400, the exception's text).
    """

    def __init__(self, reply: Reply, *, break_streams: int = 0, batch_polls: int = 1) -> None:
        self.reply = reply
        self.break_streams = break_streams
        self.chat_calls = 0
        self.embedding_calls = 0
        self.broken_streams = 0
        self.batch_polls = batch_polls  # a batch answers in_progress to this many retrievals, then is processed
        self.batch_submissions = 0
        self.batch_lists = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        """Serve on a free port in a thread; returns the base URL (``http://127.0.0.1:PORT/v1``)."""
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch as the API shows it; processed (output and error files written) once its polls are used up."""
        with self._lock:
            batch = self.batches[batch_id]
            batch["_polls"] += 1
            total = batch["request_counts"]["total"]
            if batch["status"] == "in_progress" and batch["_polls"] > self.batch_polls:
                self._process(batch)
            elif batch["status"] == "in_progress":
                batch["request_counts"]["completed"] = total * batch["_polls"] // (self.batch_polls + 1)
            return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _process(self, batch: dict[str, Any]) -> None:
        outputs, errors = [], []
        for line in self.files[batch["input_file_id"]].decode("utf-8").splitlines():
            record = json.loads(line)
            body = record["body"]
            try:
                text = self.reply(body["messages"])
            except Exception as exc:  # scripted per-record failure
                error = {"error": {"message": str(exc), "type": "invalid_request_error", "code": "bad_request"}}
                errors.append({"id": "r", "custom_id": record["custom_id"], "response": {"status_code": 400, "body": error}, "error": None})
                continue
            usage = {"prompt_tokens": sum(len(str(m["content"]).split()) for m in body["messages"]), "completion_tokens": len(text.split())}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            completion = {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"], "usage": usage,
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
            outputs.append({"id": "r", "custom_id": record["custom_id"], "response": {"status_code": 200, "body": completion}, "error": None})
        for kind, lines in (("output_file_id", outputs), ("error_file_id", errors)):
            if lines:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
                batch[kind] = file_id
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        batch["status"] = "completed"

    def _count(self, name: str) -> int:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            return getattr(self, name)


def embedding(text: str, dimensions: int = 8) -> list[float]:
    """The stand-in's unit vector for ``text``: the same text always gets the same vector."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    values = [b - 127.5 for b in digest[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        owner = self.owner
        path = self.path.split("?")[0]
        if path.endswith("/batches"):
            owner._count("batch_lists")
            with owner._lock:
                data = [{k: v for k, v in b.items() if not k.startswith("_")} for b in reversed(owner.batches.values())]
            self._json(200, {"object": "list", "data": data, "has_more": False})
        elif "/batches/" in path:
            self._json(200, owner.retrieve_batch(path.rsplit("/", 1)[-1]))
        elif path.endswith("/content"):
            data = owner.files[path.split("/")[-2]]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._json(200, {"object": "list", "data": [{"id": "standin", "object": "model"}]})

    def _upload(self, raw: bytes) -> None:
        from email.parser import BytesParser
        from email.policy import default

        message = BytesParser(policy=default).parsebytes(f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw)
        parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        data = parts["file"].get_payload(decode=True)
        with self.owner._lock:
            file_id = f"file-{len(self.owner.files) + 1}"
            self.owner.files[file_id] = data
        self._json(200, {"id": file_id, "object": "file", "bytes": len(data), "created_at": 0, "filename": parts["file"].get_filename(),
                         "purpose": parts["purpose"].get_payload(decode=True).decode(), "status": "processed"})

    def _create_batch(self, body: dict[str, Any]) -> None:
        owner = self.owner
        with owner._lock:
            owner.batch_submissions += 1
            batch_id = f"batch_{owner.batch_submissions}"
            total = len(owner.files[body["input_file_id"]].splitlines())
            owner.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None, "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"], "status": "in_progress", "output_file_id": None, "error_file_id": None,
                "created_at": 0, "metadata": body.get("metadata"), "request_counts": {"total": total, "completed": 0, "failed": 0}, "_polls": 0,
            }
            view = {k: v for k, v in owner.batches[batch_id].items() if not k.startswith("_")}
        self._json(200, view)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/files"):
            self._upload(raw)
            return
        body = json.loads(raw or b"{}")
        if self.path.endswith("/batches"):
            self._create_batch(body)
            return
        if self.path.endswith("/embeddings"):
            self.owner._count("embedding_calls")
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": embedding(t)} for i, t in enumerate(texts)]
            tokens = sum(len(t.split()) for t in texts)
            self._json(200, {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
            return
        self.owner._count("chat_calls")
        text = self.owner.reply(body["messages"])
        usage = {"prompt_tokens": sum(len(str(m["content"]).split()) for m in body["messages"]), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            self._json(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        half = max(1, len(text) // 2)
        if self.owner.broken_streams < self.owner.break_streams:
            self.owner._count("broken_streams")
            self._event(self._chunk(body, {"role": "assistant", "content": text[:half]}, None))
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # dropped mid-answer: no finish_reason, no terminating chunk
            return
        for piece in (text[:half], text[half:]):
            self._event(self._chunk(body, {"content": piece}, None))
        self._event(self._chunk(body, {}, "stop"))
        self._event({**self._chunk(body, {}, None), "choices": [], "usage": usage})
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")

    @staticmethod
    def _chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def _event(self, payload: dict[str, Any]) -> None:
        self._send_chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
