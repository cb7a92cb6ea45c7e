"""A small Amazon Bedrock look-alike on 127.0.0.1 that the real boto3 client talks to.

It speaks the wire format of three operations, taken from botocore's service models:
``POST /model/{modelId}/converse`` (JSON), ``POST /model/{modelId}/converse-stream`` and
``POST /optimize-prompt`` (both ``application/vnd.amazon.eventstream``). Errors are rest-json
errors: a status code, an ``x-amzn-ErrorType`` header and ``{"message": ...}``.

Example:
    >>> with start_bedrock_server(responder=lambda model_id, request: "42") as server:  # doctest: +SKIP
    ...     monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
    ...     ...  # any boto3 bedrock-runtime client now answers "42"
    ...     assert server.calls == 1 and "Authorization" in server.requests[0].headers
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

Responder = Callable[[str, Mapping[str, Any]], str]

DEFAULT_ANSWER = "The answer is 42."

# The HTTP status botocore expects with each error code (bedrock-runtime service-2.json).
ERROR_STATUS = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
_MODEL_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream)$")


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it; ``model_id`` is URL-decoded (ARNs arrive as ``arn%3A...``)."""

    operation: str  # converse | converse-stream | optimize-prompt | unknown
    path: str
    model_id: str | None
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class BedrockServer:
    """The running server. Fault options may be changed while it runs.

    Args:
        responder: ``(model_id, request_json) -> answer text``; default: :data:`DEFAULT_ANSWER`.
        optimizer: ``(target_model_id, prompt_text) -> optimized prompt`` for ``/optimize-prompt``.
        throttle_fraction: Throttle this fraction of model calls with a 429 ``ThrottlingException``,
            deterministically and evenly spread, starting with the first call (0.5 throttles calls 1, 3, 5...;
            1.0 every call).
        model_errors: ``{model_id: error code}``, e.g. ``{"bad-model": "ValidationException"}``.
        known_models: When given, any other model id gets a 404 ``ResourceNotFoundException``.
        stream_break_after: Break every converse-stream after this many events (messageStart is event 1).
        stream_break: How it breaks: ``"close"`` drops the connection mid-body, ``"end"`` ends the body
            cleanly without messageStop or metadata, any other value is sent as an event-stream exception
            of that name (``"modelStreamErrorException"``, ``"throttlingException"``).
        delay_s: Sleep before the first token, so time to first token is measurable.
    """

    responder: Responder = lambda model_id, request: DEFAULT_ANSWER  # noqa: E731
    optimizer: Callable[[str, str], str] = lambda model_id, text: f"Think step by step.\n{text}"  # noqa: E731
    throttle_fraction: float = 0.0
    model_errors: Mapping[str, str] = field(default_factory=dict)
    known_models: Collection[str] | None = None
    stream_break_after: int | None = None
    stream_break: str = "close"
    delay_s: float = 0.0
    url: str = field(default="", init=False)
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    _model_calls: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _cached_prefixes: set[str] = field(default_factory=set, init=False)

    def _prompt_cache(self, body: Mapping[str, Any], input_tokens: int) -> dict[str, int]:
        """Bedrock's usage with a cachePoint after the system prompt: written once, then read; inputTokens leaves both out."""
        system = list(body.get("system") or [])
        if not any("cachePoint" in block for block in system):
            return {}
        prefix = " ".join(block.get("text", "") for block in system)
        with self._lock:
            seen = prefix in self._cached_prefixes
            self._cached_prefixes.add(prefix)
        cached = _words(prefix)
        return {"inputTokens": input_tokens - cached, "cacheReadInputTokens" if seen else "cacheWriteInputTokens": cached}

    @property
    def calls(self) -> int:
        """How many HTTP requests arrived (failed ones included)."""
        return len(self.requests)

    def _throttle_now(self) -> bool:
        with self._lock:
            self._model_calls += 1
            n = self._model_calls
        # Call n is throttled when n * fraction crosses the next integer: exact and evenly spread
        # (rounded so that 10 * 0.7 counts as 7, not 7.000000000000001).
        crossed = math.ceil(round(n * self.throttle_fraction, 9)) - math.ceil(round((n - 1) * self.throttle_fraction, 9))
        return crossed > 0


def encode_event(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message with string headers."""
    encoded_headers = b""
    for name, value in headers.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        encoded_headers += struct.pack("B", len(name_bytes)) + name_bytes + b"\x07"  # 7: string
        encoded_headers += struct.pack(">H", len(value_bytes)) + value_bytes
    total_length = 12 + len(encoded_headers) + len(payload) + 4  # prelude, headers, payload, message CRC
    prelude = struct.pack(">II", total_length, len(encoded_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    return encode_event(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload).encode(),
    )


def exception_event(exception_type: str, message: str) -> bytes:
    return encode_event(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message}).encode(),
    )


def _words(text: str) -> int:
    return len(text.split())


def _request_text(request: Mapping[str, Any]) -> str:
    blocks = list(request.get("system") or [])
    for message in request.get("messages") or []:
        blocks += message.get("content") or []
    return " ".join(block.get("text", "") for block in blocks)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as boto3 meets in production
    # Without TCP_NODELAY each small event waits for the client's delayed ACK: ~40 ms added per call
    # on a reused connection, which would show up as fake latency and time to first token.
    disable_nagle_algorithm = True
    server: ThreadingHTTPServer  # .bedrock is attached in start_bedrock_server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        bedrock: BedrockServer = self.server.bedrock  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        match = _MODEL_PATH.match(self.path)
        operation = match.group(2) if match else "optimize-prompt" if self.path == "/optimize-prompt" else "unknown"
        model_id = unquote(match.group(1)) if match else body.get("targetModelId")
        bedrock.requests.append(RecordedRequest(operation, self.path, model_id, dict(self.headers), body))

        if operation == "unknown":
            return self._error("UnknownOperationException", f"no operation at {self.path}", status=404)
        if bedrock._throttle_now():
            return self._error("ThrottlingException", "Too many requests")
        if model_id in bedrock.model_errors:
            code = bedrock.model_errors[model_id]
            return self._error(code, f"{code} for model {model_id}")
        if bedrock.known_models is not None and model_id not in bedrock.known_models:
            return self._error("ResourceNotFoundException", f"Model {model_id} not found.")

        start = time.perf_counter()  # the model's time (latencyMs) includes the wait, as on Bedrock
        time.sleep(bedrock.delay_s)
        if operation == "optimize-prompt":
            return self._optimize(bedrock, model_id, body["input"]["textPrompt"]["text"])
        answer = bedrock.responder(model_id, body)
        usage = {"inputTokens": _words(_request_text(body)), "outputTokens": _words(answer)}
        usage.update(bedrock._prompt_cache(body, usage["inputTokens"]))
        usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"] + usage.get("cacheReadInputTokens", 0) + usage.get("cacheWriteInputTokens", 0)
        if operation == "converse":
            return self._json(200, {
                "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                "stopReason": "end_turn",
                "usage": usage,
                "metrics": {"latencyMs": int((time.perf_counter() - start) * 1000) + 1},
            })
        pieces = re.findall(r"\S+\s*", answer) or [""]  # one delta per word, like a token stream
        events = [event("messageStart", {"role": "assistant"})]
        events += [event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0}) for piece in pieces]
        events += [
            event("contentBlockStop", {"contentBlockIndex": 0}),
            event("messageStop", {"stopReason": "end_turn"}),
            event("metadata", {"usage": usage, "metrics": {"latencyMs": int((time.perf_counter() - start) * 1000) + 1}}),
        ]
        self._stream(events, bedrock.stream_break_after, bedrock.stream_break)

    def _optimize(self, bedrock: BedrockServer, model_id: str, text: str) -> None:
        self._stream([
            event("analyzePromptEvent", {"message": f"Analyzing the prompt for {model_id}."}),
            event("optimizedPromptEvent", {"optimizedPrompt": {"textPrompt": {"text": bedrock.optimizer(model_id, text)}}}),
        ])

    def _stream(self, events: list[bytes], break_after: int | None = None, how: str = "close") -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, message in enumerate(events):
            if break_after is not None and index == break_after:
                if how == "close":  # no terminating chunk: the client sees the connection break mid-body
                    self.close_connection = True
                    self.wfile.flush()
                    return
                if how != "end":
                    self._chunk(exception_event(how, f"{how} while streaming the answer"))
                break
            self._chunk(message)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _error(self, code: str, message: str, status: int | None = None) -> None:
        self._json(status or ERROR_STATUS.get(code, 400), {"message": message}, {"x-amzn-ErrorType": code})

    def _json(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up on a kept-alive connection is normal, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def start_bedrock_server(**options: Any) -> Iterator[BedrockServer]:
    """Run a :class:`BedrockServer` (keyword options as its fields) on a free port of 127.0.0.1."""
    bedrock = BedrockServer(**options)
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    httpd.bedrock = bedrock  # type: ignore[attr-defined]
    bedrock.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield bedrock
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
