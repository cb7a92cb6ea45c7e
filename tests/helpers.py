"""Helpers the tests share: ports, servers, small projects on disk, the CLI as a user runs it."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float = 600.0, process: subprocess.Popen | None = None) -> None:
    """Wait for ``url`` to answer; the timeout only guards against a hang (servers start slowly on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")



_STORE_TEMPLATE: Path | None = None


def new_store(path: Path) -> str:
    """An empty MLflow sqlite store at ``path`` with every migration applied; returns its URI.

    MLflow migrates a new sqlite store on first use, which costs seconds per store (tens of seconds on
    a loaded machine); every test has a store of its own, so one migrated store is made per process
    and copied.
    """
    global _STORE_TEMPLATE
    if _STORE_TEMPLATE is None:
        import atexit
        import shutil
        import tempfile

        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        folder = Path(tempfile.mkdtemp(prefix="agility-store-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"))
        store.engine.dispose()
        _STORE_TEMPLATE = folder / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_STORE_TEMPLATE.read_bytes())
    return f"sqlite:///{path}"


def is_new_store(path: Path) -> bool:
    """Whether the store at ``path`` is still exactly as :func:`new_store` made it: nothing was logged."""
    assert _STORE_TEMPLATE is not None
    return path.read_bytes() == _STORE_TEMPLATE.read_bytes()


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 over a sqlite store in ``root``; stop and start it again at will.

    The only place the tests start an MLflow server, so every test server is configured alike: no
    background job workers (each is a ~230 MB process that only slows a 2-core machine), no
    telemetry, no model-catalog download.

    Use it as ``with MlflowServer(tmp_path / "server") as url: ...``; ``stop()`` and ``start()`` again keep the
    port and the store (the fault tests take a server away mid-run).
    """

    def __init__(self, root: Path, *, port: int | None = None, workers: int = 1) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._log: Any = None
        if not (self.root / "mlflow.db").exists():
            new_store(self.root / "mlflow.db")

    @property
    def store_uri(self) -> str:
        """The server's own backend store: fill it directly when a test needs many runs fast."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_MODEL_CATALOG_URI": "",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self._log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers), "--backend-store-uri", self.store_uri,
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            wait_http(f"{self.url}/health", process=self.process)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def start_mlflow_server(backend_store_uri: str, artifacts: Path, log_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 serving its artifacts from ``artifacts``; yields its URL, stops it after."""
    port = free_port()
    # No background job workers: each is a ~230 MB process that only slows a 2-core machine here.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_MODEL_CATALOG_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/health", process=process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


GOLDEN_ROWS = [
    {"sample_id": "q1", "question": "What was revenue in FY2023?", "context": "Revenue FY2023: $1,577.0 million.",
     "answer_ground_truth": "$1577.00 million", "answer_source_llm": "Revenue was $1,577 million.",
     "latency_source_llm": "1.2", "ttft_source_llm": "0.3", "input_token_source_llm": "120", "output_token_source_llm": "9"},
    {"sample_id": "q2", "question": "What was net income in FY2023?", "context": "Net income FY2023: $212.5 million.",
     "answer_ground_truth": "$212.5 million", "answer_source_llm": "Net income was $210 million.",
     "latency_source_llm": "2.0", "ttft_source_llm": "0.5", "input_token_source_llm": "130", "output_token_source_llm": "8"},
    {"sample_id": "q3", "question": "Is the company profitable?", "context": "Net income FY2023: $212.5 million.",
     "answer_ground_truth": "Yes", "answer_source_llm": "Yes",
     "latency_source_llm": "0.7", "ttft_source_llm": "0.2", "input_token_source_llm": "110", "output_token_source_llm": "1"},
]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_project(directory: Path, *, rows: Sequence[Mapping[str, Any]] = GOLDEN_ROWS, **overrides: Any) -> Path:
    """A config + dataset on disk; ``overrides`` replace top-level config keys. Returns the config path."""
    write_csv(directory / "golden.csv", rows)
    config: dict[str, Any] = {
        "experiment": "test-migration",
        "dataset": {"path": "golden.csv"},
        "prompts": [{"name": "qa", "template": "Context: {{context}}\nQuestion: {{question}}\nAnswer briefly.",
                     "system": "You are a financial analyst."}],
        "source": {"provider": "replay", "model_id": "gpt-4o-mini"},
        "candidates": [],
        "metrics": ["exact_match", "token_f1", "numeric_match"],
        "run": {"concurrency": 2},
    }
    config.update(overrides)
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The ``agility`` command, as a user runs it, from ``cwd`` (default: a scratch folder, never the repo)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agility_mlflow", *args],
        capture_output=True, text=True, env=env, cwd=cwd or _scratch(), timeout=timeout,
    )


def _scratch() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="agility-cli-"))
