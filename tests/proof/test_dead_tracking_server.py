"""A tracking server that does not answer: one line naming the URI within 10 s, exit 1, before any model call.

MLflow's client alone retried such a server for over four minutes and then printed urllib3's raw error.
The command runs in-process (click's runner, the same code path as the script), so the time measured is
the command's own, not the interpreter importing MLflow on a busy machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agility_mlflow.cli import main
from tests.helpers import free_port, write_project

LOCAL = {"name": "local", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"max_tokens": 4}}


@pytest.mark.parametrize("command", ["run", "sweep", "compare", "check", "review"])
def test_an_unreachable_server_fails_fast_naming_its_uri(command: str, tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = write_project(tmp_path, candidates=[LOCAL], sweep={"n_trials": 2, "slices": 1})
    args = {
        "run": ["run", str(config), "--tracking-uri", uri],
        "sweep": ["sweep", str(config), "--tracking-uri", uri, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"],
        "compare": ["compare", str(config), "--tracking-uri", uri],
        "check": ["check", "--model", "models:/app.qa@champion", "--dataset", str(tmp_path / "golden.csv"), "--tracking-uri", uri],
        "review": ["review", "export", "0123", "--output", str(tmp_path / "r.csv"), "--tracking-uri", uri],
    }[command]
    cache = tmp_path / "cache"  # the response cache (tests/conftest.py)
    started = time.monotonic()
    result = CliRunner().invoke(main, args)
    elapsed = time.monotonic() - started
    assert (result.exit_code, result.stderr) == (
        1, f"error: tracking server {uri} is unreachable ([Errno 111] Connection refused); start it or pass another --tracking-uri\n")
    assert elapsed < 10, elapsed
    assert not cache.exists()  # no model was called: nothing was cached
    assert "model calls" not in result.stdout  # a sweep stopped before its estimate too
