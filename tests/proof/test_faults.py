"""Nothing is lost: kill -9 mid-run, the tracking server going away, then resuming from the cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from bench.standin_server import start_standin
from tests.helpers import GOLDEN_ROWS, REPO, free_port, run_cli, wait_http, write_project

N = 30


def _rows() -> list[dict]:
    return [{**GOLDEN_ROWS[0], "sample_id": f"s{i:02d}", "question": f"Question {i}?"} for i in range(N)]


def _project(tmp_path: Path, url: str) -> Path:
    candidate = {"name": "served", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": url, "api_key": "k"}
    return write_project(tmp_path, rows=_rows(), candidates=[candidate], run={"concurrency": 1})


def _start_agility(config: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agility_mlflow", "run", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=config.parent,
    )


def _wait_for_cached_answers(cache: Path, at_least: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(cache.glob("*/*.json"))) < at_least:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)


def test_kill_9_mid_run_then_rerun_resumes_without_repeating_calls(tmp_path: Path) -> None:
    cache = Path(os.environ["AGILITY_CACHE_DIR"])
    with start_standin(latency_s=0.15) as server:
        config = _project(tmp_path, server.url)
        process = _start_agility(config, {})
        _wait_for_cached_answers(cache, 5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        answered = len(list(cache.glob("*/*.json")))
        calls_before = server.calls
        assert answered < N  # killed mid-run

        client = MlflowClient()
        experiment = client.get_experiment_by_name("test-migration")
        left = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
        assert [r.info.run_name for r in left] == ["served/qa"]

        result = run_cli("run", str(config))
        assert result.returncode == 0, result.stderr
        assert server.calls - calls_before == N - answered  # only the samples that had no answer yet
    killed = client.get_run(left[0].info.run_id)
    assert killed.info.status == "FAILED"
    assert killed.data.tags["agility.error"].startswith("interrupted: process")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`agility.candidate` = 'served'",
                              order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["n_cache_hits"] == answered and runs[0].data.metrics["n_samples"] == N


def test_tracking_server_going_away_fails_clearly_and_a_rerun_makes_no_new_calls(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts")]
    url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server_env)
    try:
        wait_http(f"{url}/health", process=server_process)
        with start_standin(latency_s=0.1) as model:
            config = _project(tmp_path, model.url)
            agility = _start_agility(config, env)
            _wait_for_cached_answers(Path(os.environ["AGILITY_CACHE_DIR"]), 3)
            server_process.terminate()
            server_process.wait(timeout=30)
            out, err = agility.communicate(timeout=120)
            calls_first = model.calls
            assert agility.returncode == 1
            last = err.strip().splitlines()[-1]
            assert last.startswith("error: MLflow: ") and "Traceback" not in err, err[-1500:]

            server_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server_env)
            wait_http(f"{url}/health", process=server_process)
            rerun = run_cli("run", str(config), env=env)
            assert rerun.returncode == 0, rerun.stderr
            assert model.calls == calls_first  # every answer came from the cache
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("test-migration")
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.`agility.candidate` = 'served'")
        assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
        assert not client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    finally:
        server_process.terminate()
        server_process.wait(timeout=30)
