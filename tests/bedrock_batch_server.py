"""Amazon Bedrock batch inference on 127.0.0.1: moto's S3 in server mode, and a stand-in for the control plane.

moto implements S3 but not ``CreateModelInvocationJob`` / ``GetModelInvocationJob``, so
:class:`BedrockBatchStandIn` speaks those two operations' rest-json wire format (botocore's ``bedrock``
service model: ``POST /model-invocation-job``, ``GET /model-invocation-job/{jobIdentifier}``) to the real
boto3 client. Like Bedrock, it reads the job's JSONL input from S3 and writes one ``.jsonl.out`` line per
record (a Converse response, or an ``error``) under ``<output uri>/<job id>/``; a ``clientRequestToken``
seen before returns the job it created then.

Example:
    >>> with start_batch_services(reply=lambda text: "42") as services:  # doctest: +SKIP
    ...     monkeypatch.setenv("AWS_ENDPOINT_URL_S3", services.s3_url)
    ...     monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", services.bedrock.url)
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

ACCOUNT = "123456789012"


class BedrockBatchStandIn:
    """Model invocation jobs: each answers ``InProgress`` to ``polls`` status checks, then is processed and ``Completed``.

    Args:
        s3: A boto3 S3 client on the same S3 the jobs read and write.
        reply: The answer text for a record's last user text; raising ``ValueError`` fails that record.
        polls: Status checks a job stays ``InProgress`` (processed records grow with each).
        fail_message: When set, jobs end ``Failed`` with this message instead of being processed.

    Attributes:
        submissions: ``CreateModelInvocationJob`` calls that created a job (a repeated token creates none).
        requests: ``(method, path, body)`` of every request.
    """

    def __init__(self, s3: Any, reply: Callable[[str], str], polls: int = 1) -> None:
        self.s3 = s3
        self.reply = reply
        self.polls = polls
        self.fail_message: str | None = None
        self.submissions = 0
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> str:
        owner = self

        class Handler(_Handler):
            standin = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            token = body.get("clientRequestToken")
            if token in self._tokens:  # idempotent, as Bedrock is for a repeated token
                return {"jobArn": self._tokens[token]}
            self.submissions += 1
            job_id = f"job{self.submissions:08d}"
            arn = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-invocation-job/{job_id}"
            now = datetime.now(UTC).isoformat()
            self.jobs[arn] = {"jobArn": arn, "jobName": body["jobName"], "modelId": body["modelId"], "roleArn": body["roleArn"],
                              "status": "Submitted", "submitTime": now, "lastModifiedTime": now, "inputDataConfig": body["inputDataConfig"],
                              "outputDataConfig": body["outputDataConfig"], "modelInvocationType": body.get("modelInvocationType"),
                              "_polls": 0}
            if token:
                self._tokens[token] = arn
            bucket, _, key = body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].removeprefix("s3://").partition("/")
            self.jobs[arn]["totalRecordCount"] = len(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines())
            return {"jobArn": arn}

    def get(self, arn: str) -> dict[str, Any]:
        with self._lock:
            job = self.jobs[arn]
            job["_polls"] += 1
            if job["status"] in ("Submitted", "InProgress"):
                if job["_polls"] > self.polls and self.fail_message:
                    job.update(status="Failed", message=self.fail_message)
                elif job["_polls"] > self.polls:
                    self._process(job)
                else:
                    job["status"] = "InProgress"
                    job["processedRecordCount"] = job.get("totalRecordCount", 0) * job["_polls"] // (self.polls + 1)
            return {k: v for k, v in job.items() if not k.startswith("_")}

    def _process(self, job: dict[str, Any]) -> None:
        input_uri = job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        bucket, _, key = input_uri.removeprefix("s3://").partition("/")
        lines = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8").splitlines()
        out, errors = [], 0
        for line in lines:
            record = json.loads(line)
            request = record["modelInput"]
            text = " ".join(block["text"] for block in request["messages"][-1]["content"] if "text" in block)
            try:
                answer = self.reply(text)
            except ValueError as exc:
                errors += 1
                out.append({"recordId": record["recordId"], "modelInput": request, "error": {"errorCode": 400, "errorMessage": str(exc)}})
                continue
            words_in = sum(len(b.get("text", "").split()) for m in request["messages"] for b in m["content"])
            usage = {"inputTokens": words_in, "outputTokens": len(answer.split()), "totalTokens": words_in + len(answer.split())}
            output = {"output": {"message": {"role": "assistant", "content": [{"text": answer}]}}, "stopReason": "end_turn", "usage": usage,
                      "metrics": {"latencyMs": 120}}
            out.append({"recordId": record["recordId"], "modelInput": request, "modelOutput": output})
        out_bucket, _, prefix = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"].removeprefix("s3://").partition("/")
        folder = f"{prefix.rstrip('/')}/{job['jobArn'].rsplit('/', 1)[-1]}"
        name = key.rsplit("/", 1)[-1]
        self.s3.put_object(Bucket=out_bucket, Key=f"{folder}/{name}.out", Body="".join(json.dumps(r) + "\n" for r in out).encode())
        manifest = {"totalRecordCount": len(lines), "processedRecordCount": len(lines), "successRecordCount": len(lines) - errors,
                    "errorRecordCount": errors}
        self.s3.put_object(Bucket=out_bucket, Key=f"{folder}/manifest.json.out", Body=json.dumps(manifest).encode())
        job.update(status="Completed" if not errors else "PartiallyCompleted", totalRecordCount=len(lines), processedRecordCount=len(lines),
                   successRecordCount=len(lines) - errors, errorRecordCount=errors, endTime=datetime.now(UTC).isoformat())


class _Handler(BaseHTTPRequestHandler):
    standin: BedrockBatchStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.standin.requests.append(("POST", self.path, body))
        if self.path == "/model-invocation-job":
            self._json(200, self.standin.create(body))
        else:
            self._json(404, {"message": f"no operation at {self.path}"}, "UnknownOperationException")

    def do_GET(self) -> None:
        self.standin.requests.append(("GET", self.path, {}))
        arn = unquote(self.path.removeprefix("/model-invocation-job/"))
        if self.path.startswith("/model-invocation-job/") and arn in self.standin.jobs:
            self._json(200, self.standin.get(arn))
        else:
            self._json(404, {"message": f"job {arn} not found"}, "ResourceNotFoundException")

    def _json(self, status: int, payload: dict[str, Any], error: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class BatchServices:
    s3_url: str
    s3: Any
    bedrock: BedrockBatchStandIn


@contextlib.contextmanager
def start_batch_services(reply: Callable[[str], str], *, polls: int = 1, bucket: str = "agility-batch") -> Iterator[BatchServices]:
    """moto's S3 server and the control-plane stand-in, both on 127.0.0.1; ``bucket`` is created."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:  # moto's server takes a fixed port: pick a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps its state per process, not per server: start from an empty S3.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=bucket)
    bedrock = BedrockBatchStandIn(s3, reply, polls)
    bedrock.start()
    try:
        yield BatchServices(url, s3, bedrock)
    finally:
        bedrock.stop()
        moto.stop()
