"""The tests' one OpenAI-protocol stand-in server on 127.0.0.1, for the real ``openai`` client.

It answers ``POST /v1/chat/completions`` (streamed with ``include_usage`` or not) with a canned
answer after ``latency_s``, counts calls, records the requests it answered, and can throttle (HTTP
429) an exact, evenly spread share of them or drop the first streamed answers mid-way; it answers
``POST /v1/embeddings`` with a fixed unit vector per text, and the Batch API's files and batches with
the same ``answer`` (``server.batch_api``, see ``tests/openai_batches.py``). It proves speed and fault handling, never
quality: features are proven on real models.

Use it as ``with start_standin(latency_s=0.0, answer=lambda request: ...) as server:`` and point an
OpenAI client at ``server.url``; ``server.answered`` holds the requests it answered.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.openai_batches import BatchAPI


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self,
        latency_s: float,
        throttle_fraction: float,
        answer: Callable[[dict[str, Any]], str],
        reject: Callable[[dict[str, Any]], str | None] | None = None,
        usage_details: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        break_streams: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency_s = latency_s
        self.throttle_fraction = throttle_fraction
        self.answer = answer
        self.reject = reject  # a request -> the 400 message of a parameter the model does not take, or None
        self.usage_details = usage_details  # a request -> extra usage fields (prompt_tokens_details, ...)
        self.break_streams = break_streams  # the first this many streamed answers are dropped after their first chunk
        self.calls = 0  # chat completion requests, throttled ones included
        self.throttled = 0
        self.broken_streams = 0
        self.embedding_calls = 0
        self.answered: list[dict[str, Any]] = []  # the body of each request answered (not throttled)
        self.headers: set[tuple[str, str]] = set()  # (lower-case name, value): proves which credentials arrived
        self.lock = threading.Lock()
        self.batch_api = BatchAPI(answer)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-answer (the kill -9 tests) is expected; anything else is still reported.
        if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            super().handle_error(request, client_address)

    def throttles(self, number: int) -> bool:
        """Call ``number`` (from 1) is throttled when ``number x fraction`` crosses an integer: exact and evenly spread."""
        fraction = self.throttle_fraction
        return math.ceil(round(number * fraction, 9)) > math.ceil(round((number - 1) * fraction, 9))


class _Handler(BaseHTTPRequestHandler):
    server: StandinServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else small writes wait ~40 ms for an ACK on kept-alive connections

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if "/files" in self.path or "/batches" in self.path:
            self._batch_api(b"")
            return
        if self.path.endswith("/stats"):
            self._json(200, {"calls": self.server.calls, "throttled": self.server.throttled})
            return
        self._json(200, {"object": "list", "data": [{"id": "standin", "object": "model"}]})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith(("/files", "/batches")):
            self._batch_api(raw)
            return
        request = json.loads(raw or b"{}")
        if self.path.endswith("/embeddings"):
            self._embeddings(request)
            return
        with self.server.lock:
            self.server.headers.update((name.lower(), value) for name, value in self.headers.items())
            self.server.calls += 1
            number = self.server.calls
            throttle = self.server.throttles(number)
            if throttle:
                self.server.throttled += 1
            else:
                self.server.answered.append(request)
        if throttle:
            self._json(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}})
            return
        rejected = self.server.reject(request) if self.server.reject else None
        if rejected:
            self._json(400, {"error": {"message": rejected, "type": "invalid_request_error", "code": "unsupported_parameter"}})
            return
        time.sleep(self.server.latency_s)
        text = self.server.answer(request)
        usage = {"prompt_tokens": sum(len(m["content"]) // 4 for m in request["messages"]), "completion_tokens": len(text) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if self.server.usage_details:
            usage.update(self.server.usage_details(request))
        if request.get("stream"):
            self._stream(request["model"], text, usage)
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            self._json(200, {"id": "x", "object": "chat.completion", "created": 0, "model": request["model"], "choices": [choice], "usage": usage})

    def _batch_api(self, raw: bytes) -> None:
        status, body, content_type = self.server.batch_api.handle(self.command, self.path, self.headers.get("Content-Type", ""), raw)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _embeddings(self, request: dict[str, Any]) -> None:
        with self.server.lock:
            self.server.embedding_calls += 1
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        data = [{"object": "embedding", "index": i, "embedding": embedding(t)} for i, t in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        self._json(200, {"object": "list", "data": data, "model": request["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _stream(self, model: str, text: str, usage: dict[str, int]) -> None:
        with self.server.lock:
            broken = self.server.broken_streams < self.server.break_streams
            self.server.broken_streams += broken
        if broken:
            self._break_stream(model, text)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model}
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
                  {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                  {**base, "choices": [], "usage": usage}]
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _break_stream(self, model: str, text: str) -> None:
        """Send half the answer as one chunk of a chunked body, then drop the connection (as a reset or a proxy timeout does)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": text[: max(1, len(text) // 2)]}, "finish_reason": None}]}
        data = f"data: {json.dumps(chunk)}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(2)  # no finish_reason, no terminating chunk

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def embedding(text: str, dimensions: int = 8) -> list[float]:
    """The stand-in's unit vector for ``text``: the same text always gets the same vector."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    values = [b - 127.5 for b in digest[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


@contextmanager
def start_standin(
    latency_s: float = 0.1,
    throttle_fraction: float = 0.0,
    answer: Callable[[dict[str, Any]], str] = lambda request: "The answer is 42.",
    reject: Callable[[dict[str, Any]], str | None] | None = None,
    usage_details: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    break_streams: int = 0,
) -> Iterator[StandinServer]:
    """Serve in a background thread; ``throttle_fraction=0.3`` answers 3 calls in 10 with HTTP 429."""
    server = StandinServer(latency_s, throttle_fraction, answer, reject, usage_details, break_streams)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class StandinProcess:
    """The stand-in in a process of its own, as a real model server is (no GIL shared with the client)."""

    def __init__(self, url: str, process: Any) -> None:
        self.url = url
        self._process = process

    @property
    def calls(self) -> int:
        import urllib.request

        with urllib.request.urlopen(self.url + "/stats") as response:
            return int(json.load(response)["calls"])


@contextmanager
def standin_process(latency_s: float = 0.1, throttle_fraction: float = 0.0, verdict: str | None = None) -> Iterator[StandinProcess]:
    """Run ``python -m tests.openai_server`` on a free port of 127.0.0.1 until the block ends.

    ``verdict``: the reply to a judge's request (one that asks for JSON), e.g. ``{"reasoning": "Right.", "score": 8}``.
    """
    import subprocess
    import urllib.request
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--latency-s", str(latency_s), "--throttle-fraction", str(throttle_fraction),
         *(["--verdict", verdict] if verdict else [])],
        stdout=subprocess.PIPE, text=True, cwd=repo,
    )
    try:
        url = process.stdout.readline().strip()
        urllib.request.urlopen(url + "/models").close()
        yield StandinProcess(url, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-s", type=float, default=0.1)
    parser.add_argument("--throttle-fraction", type=float, default=0.0)
    parser.add_argument("--verdict", default=None, help="the reply to a judge's request (one asking for JSON)")
    options = parser.parse_args()

    def answer(request: dict[str, Any]) -> str:
        if options.verdict and any("JSON" in message["content"] for message in request["messages"]):
            return str(options.verdict)
        return "The answer is 42."

    standin = StandinServer(options.latency_s, options.throttle_fraction, answer)
    print(standin.url, flush=True)
    standin.serve_forever()
