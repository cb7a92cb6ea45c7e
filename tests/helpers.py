"""Helpers the tests share: ports, servers, small projects on disk, the CLI as a user runs it."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    """A real ``mlflow server`` on 127.0.0.1 over a sqlite store in ``root`` (or ``store_uri``), serving its
    artifacts from ``root / "artifacts"``; stop and start it again at will.

    The only place the tests start an MLflow server, so every test server is configured alike: no
    background job workers (each is a ~230 MB process that only slows a 2-core machine), no
    telemetry, no model-catalog download.

    Use it as ``with MlflowServer(tmp_path / "server") as url: ...``; ``stop()`` and ``start()`` again keep the
    port and the store (the fault tests take a server away mid-run).
    """

    def __init__(self, root: Path, *, port: int | None = None, workers: int = 1, store_uri: str | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._log: Any = None
        # The backend store: a given one (e.g. PostgreSQL), else a new sqlite store in ``root``.
        self.store_uri = store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        if store_uri is None and not (self.root / "mlflow.db").exists():
            new_store(self.root / "mlflow.db")

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


@dataclass
class CliResult:
    """What a finished ``agility`` command left: its exit code and what it printed on each stream."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> CliResult:
    """The ``agility`` command with ``args``, run in this process as a user runs it, from ``cwd`` (default: a scratch folder).

    In-process (click's test runner), since a new interpreter costs 5-10 s of imports per command; the
    process's environment, working directory and MLflow's global tracking state are put back afterwards,
    as a separate process would leave them. An unexpected exception is exit code 1 with its traceback on
    stderr, as Python prints it. Use :func:`run_cli_process` where the separate process is the point.
    """
    import traceback

    import mlflow
    from click.testing import CliRunner
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from agility_mlflow.cli import main

    saved_env = dict(os.environ)
    saved_uri, saved_experiment = tracking_utils._tracking_uri, fluent._active_experiment_id
    outer_run = mlflow.active_run()
    saved_cwd = os.getcwd()
    os.chdir(cwd or _scratch())
    try:
        result = CliRunner().invoke(main, list(args), env=dict(env or {}), prog_name="agility")
    finally:
        os.chdir(saved_cwd)
        while mlflow.active_run() and (outer_run is None or mlflow.active_run().info.run_id != outer_run.info.run_id):
            mlflow.end_run()  # as a process's exit ends what it left open
        if tracking_utils._tracking_uri != saved_uri:
            mlflow.set_tracking_uri(saved_uri)
        fluent._active_experiment_id = saved_experiment
        os.environ.clear()
        os.environ.update(saved_env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(result.exit_code, result.stdout, stderr)


def run_cli_process(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                    timeout: float = 600) -> subprocess.CompletedProcess:
    """The ``agility`` command in a new Python process, for tests about the process itself (imports, files it writes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agility_mlflow", *args],
        capture_output=True, text=True, env=env, cwd=cwd or _scratch(), timeout=timeout,
    )


def _scratch() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="agility-cli-"))
