"""An OpenAI-protocol stand-in on 127.0.0.1 for the real ``openai`` client: chat completions (streamed or
not) and embeddings, with scripted replies and scripted faults.

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
    """

    def __init__(self, reply: Reply, *, break_streams: int = 0) -> None:
        self.reply = reply
        self.break_streams = break_streams
        self.chat_calls = 0
        self.embedding_calls = 0
        self.broken_streams = 0
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
        self._json(200, {"object": "list", "data": [{"id": "standin", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
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
