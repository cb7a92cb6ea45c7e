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
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float = 90.0, process: subprocess.Popen | None = None) -> None:
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
