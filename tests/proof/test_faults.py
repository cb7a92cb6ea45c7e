"""Nothing is lost, nothing is paid twice: faults of the provider, the tracking server, the process and the cache.

Each fault runs against real parts: the ``agility`` command in its own process, an OpenAI-compatible
stand-in server (throttling on demand), a real ``mlflow server`` and the on-disk response cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from agility_mlflow.cache import ResponseCache
from tests.helpers import GOLDEN_ROWS, REPO, MlflowServer, run_cli, write_project
from tests.openai_server import start_standin

N = 30


def _rows(n: int = N) -> list[dict]:
    return [{**GOLDEN_ROWS[0], "sample_id": f"s{i:02d}", "question": f"Question {i}?"} for i in range(n)]


def _project(tmp_path: Path, url: str, n: int = N, **overrides: Any) -> Path:
    candidate = {"name": "served", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": url, "api_key": "k"}
    return write_project(tmp_path, rows=_rows(n), candidates=[candidate], **{"run": {"concurrency": 1}, **overrides})


def _start_agility(config: Path, env: dict[str, str], command: str = "run") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agility_mlflow", command, str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=config.parent,
    )


def _question(request: dict) -> str:
    """The sample's question in a request rendered from write_project's template."""
    return request["messages"][-1]["content"].split("Question: ")[1].split("\n")[0]


def _echo(request: dict) -> str:
    return f"You asked: {_question(request)}"


def _results(run_id: str, tmp_path: Path) -> dict[str, dict]:
    """The run's ``eval_results.json`` rows by sample id."""
    local = MlflowClient().download_artifacts(run_id, "eval_results.json", str(tmp_path))
    table = json.loads(Path(local).read_text(encoding="utf-8"))
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert len({r["sample_id"] for r in rows}) == len(rows)
    return {r["sample_id"]: r for r in rows}


def _served_runs() -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name("test-migration")
    return client.search_runs([experiment.experiment_id], filter_string="tags.`agility.candidate` = 'served'",
                              order_by=["attributes.start_time DESC"])


def _wait_for_cached_answers(cache: Path, at_least: int, timeout_s: float = 600) -> None:
    """Wait for the run to be under way; the timeout only guards against a hang (a loaded machine is slow, not wrong)."""
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
    server = MlflowServer(tmp_path / "server")
    url = server.url
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    with server, start_standin(latency_s=0.1) as model:
        config = _project(tmp_path, model.url)
        agility = _start_agility(config, env)
        _wait_for_cached_answers(Path(os.environ["AGILITY_CACHE_DIR"]), 3)
        server.stop()
        out, err = agility.communicate(timeout=120)
        calls_first = model.calls
        assert agility.returncode == 1
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: MLflow: ") and "Traceback" not in err, err[-1500:]

        server.start()  # the same store on the same port
        rerun = run_cli("run", str(config), env=env)
        assert rerun.returncode == 0, rerun.stderr
        assert model.calls == calls_first  # every answer came from the cache
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("test-migration")
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.`agility.candidate` = 'served'")
        assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
        assert not client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")


def test_thirty_percent_throttled_calls_still_answer_every_sample_exactly_once(tmp_path: Path) -> None:
    with start_standin(latency_s=0.02, throttle_fraction=0.3, answer=_echo) as server:
        config = _project(tmp_path, server.url, run={"concurrency": 4, "traces": False})
        result = run_cli("run", str(config))
        asked = Counter(_question(request) for request in server.answered)
    assert result.returncode == 0, result.stderr[-2000:]
    assert server.throttled >= 12 and abs(server.throttled / server.calls - 0.3) < 0.03  # 30% of all calls, retries included
    assert asked == Counter({f"Question {i}?": 1 for i in range(N)})  # every sample answered once: none lost, none paid twice
    run = _served_runs()[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["n_samples"] == N and run.data.metrics["n_errors"] == 0
    rows = _results(run.info.run_id, tmp_path)
    assert {sid: row["output"] for sid, row in rows.items()} == {f"s{i:02d}": f"You asked: Question {i}?" for i in range(N)}


def test_a_corrupted_cache_entry_is_detected_recomputed_and_never_served(tmp_path: Path) -> None:
    cache = Path(os.environ["AGILITY_CACHE_DIR"])
    with start_standin(latency_s=0.0, answer=_echo) as server:
        config = _project(tmp_path, server.url, n=6, run={"concurrency": 2, "traces": False})
        assert run_cli("run", str(config)).returncode == 0
        entries = sorted(cache.glob("*/*.json"))
        assert len(entries) == 6 and server.calls == 6
        tampered = json.loads(entries[0].read_text(encoding="utf-8"))
        tampered["payload"]["text"] = "POISONED"  # well-formed JSON, stale checksum
        entries[0].write_text(json.dumps(tampered), encoding="utf-8")
        entries[1].write_bytes(entries[1].read_bytes()[:40])  # a torn write
        rerun = run_cli("run", str(config))
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert server.calls == 6 + 2  # exactly the two damaged answers were asked again
    assert rerun.stderr.count("is damaged") == 2 and "recomputing" in rerun.stderr
    run = _served_runs()[0]
    assert run.data.metrics["n_cache_hits"] == 4
    rows = _results(run.info.run_id, tmp_path)
    assert {sid: row["output"] for sid, row in rows.items()} == {f"s{i:02d}": f"You asked: Question {i}?" for i in range(6)}
    healed = ResponseCache(cache)
    assert all(healed.get(entry.stem).text.startswith("You asked: ") for entry in entries)  # rewritten whole


@pytest.mark.parametrize("sampler", ["random", "grid"])
def test_kill_9_mid_sweep_then_resume_keeps_finished_trials_and_repeats_no_call(tmp_path: Path, sampler: str) -> None:
    n, n_trials = 6, 4
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = {"params": {"max_tokens": {"choices": [8, 16, 32, 64]}}, "sampler": sampler, "seed": 0, "n_trials": n_trials,
             "slices": 1, "objective": "token_f1", "storage": storage, "study": "killed"}
    with start_standin(latency_s=0.1, answer=_echo) as server:
        config = _project(tmp_path, server.url, n=n, sweep=sweep, run={"concurrency": 1, "traces": False})
        worker = _start_agility(config, {}, command="sweep")
        deadline = time.monotonic() + 600  # a hang guard only
        while len(server.answered) < n + 2:  # the first trial done, the second one mid-way
            assert time.monotonic() < deadline and worker.poll() is None, "the sweep never got going"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        before = optuna.load_study(study_name="killed", storage=storage).trials
        (killed,) = [t for t in before if t.state == TrialState.RUNNING]
        kept = [t.number for t in before if t.state == TrialState.COMPLETE]
        assert kept and killed.user_attrs["mlflow_run_id"]

        resumed = run_cli("sweep", str(config))
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        asked = Counter((_question(r), r["max_tokens"]) for r in server.answered)
    after = {t.number: t for t in optuna.load_study(study_name="killed", storage=storage).trials}
    assert after[killed.number].state == TrialState.FAIL
    assert all(after[number].state == TrialState.COMPLETE for number in kept)
    complete = [t for t in after.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials  # the study's total, the killed trial not counted
    killed_run = MlflowClient().get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED" and killed_run.data.tags["agility.error"].startswith("interrupted")
    assert {t.user_attrs["mlflow_run_id"] for t in complete} <= {r.info.run_id for r in _served_runs() if r.info.status == "FINISHED"}
    # Every finished trial's samples were answered; a revisited configuration came from the cache, and only the
    # one call in flight at the kill may have been asked twice.
    assert {(f"Question {i}?", t.params["max_tokens"]) for t in complete for i in range(n)} <= set(asked)
    assert sum(asked.values()) - len(asked) <= 1, asked
    if sampler == "grid":  # the killed point was queued again: the grid is covered, not one short
        assert sorted(t.params["max_tokens"] for t in complete) == [8, 16, 32, 64]
