"""tracking, the only MLflow writer: how runs start and end, abandoned runs, and what it redacts, read back from MLflow."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow import tracking, vocabulary
from agility_mlflow.sweep._sweep import PrunedTrial


@pytest.fixture
def experiment_id() -> str:
    return tracking.configure(None, "tracking-test")


def test_an_experiment_keeps_its_artifacts_beside_the_sqlite_store(experiment_id: str) -> None:
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    experiment = MlflowClient().get_experiment(experiment_id)
    assert experiment.name == "tracking-test"
    assert experiment.artifact_location == (store.resolve().parent / "mlartifacts").as_uri()
    assert tracking.configure(None, "tracking-test") == experiment_id  # the same experiment, not a second one


def test_a_run_ends_finished_only_when_its_body_completes(experiment_id: str) -> None:
    with tracking.evaluation_run(experiment_id, "ok", {vocabulary.ROLE: "candidate"}) as finished:
        pass
    with pytest.raises(RuntimeError), tracking.evaluation_run(experiment_id, "broken", {vocabulary.ROLE: "candidate"}) as failed:
        raise RuntimeError("the judge died")
    with pytest.raises(PrunedTrial), tracking.evaluation_run(experiment_id, "pruned", {vocabulary.ROLE: "trial"}) as pruned:
        raise PrunedTrial("pruned after slice 1 of 2")
    with pytest.raises(KeyboardInterrupt), tracking.evaluation_run(experiment_id, "stopped", {vocabulary.ROLE: "candidate"}) as stopped:
        raise KeyboardInterrupt
    client = MlflowClient()
    runs = {run_id: client.get_run(run_id) for run_id in (finished, failed, pruned, stopped)}
    assert [(r.info.run_name, r.info.status, r.data.tags.get(vocabulary.RUN_ERROR)) for r in runs.values()] == [
        ("ok", "FINISHED", None),
        ("broken", "FAILED", "RuntimeError: the judge died"),
        ("pruned", "KILLED", "PrunedTrial: pruned after slice 1 of 2"),
        ("stopped", "KILLED", "interrupted by the user"),
    ]
    ok = runs[finished].data.tags
    assert (ok[vocabulary.ROLE], ok[vocabulary.HOST], ok[vocabulary.PID]) == ("candidate", socket.gethostname(), str(os.getpid()))


def test_only_runs_of_dead_processes_on_this_host_are_failed(experiment_id: str) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    client = MlflowClient()
    host = socket.gethostname()
    abandoned = client.create_run(experiment_id, tags={vocabulary.HOST: host, vocabulary.PID: dead.stdout.strip()}).info.run_id
    alive = client.create_run(experiment_id, tags={vocabulary.HOST: host, vocabulary.PID: str(os.getpid())}).info.run_id
    elsewhere = client.create_run(experiment_id, tags={vocabulary.HOST: "another-host", vocabulary.PID: dead.stdout.strip()}).info.run_id
    assert tracking.fail_abandoned_runs(experiment_id) == [abandoned]
    assert client.get_run(abandoned).info.status == "FAILED"
    assert client.get_run(abandoned).data.tags[vocabulary.RUN_ERROR] == f"interrupted: process {dead.stdout.strip()} ended without closing the run"
    assert [client.get_run(r).info.status for r in (alive, elsewhere)] == ["RUNNING", "RUNNING"]
    assert tracking.fail_if_running(abandoned, "again") is False  # already ended: left as it is


def test_credentials_never_reach_params_or_tags(experiment_id: str) -> None:
    with tracking.evaluation_run(experiment_id, "secrets", {vocabulary.ROLE: "candidate"}) as run_id:
        tracking.log_run_data(run_id, {"api_key": "sk-live-123", "extra": {"extra_headers": {"X-Api-Key": "k1"}}, "max_tokens": 16},
                              {"token_f1": 0.5})
        tracking.set_tags(run_id, {"agility.judge": json.dumps({"provider": "openai", "api_key": "sk-live-456"})})
    run = MlflowClient().get_run(run_id)
    assert run.data.params["api_key"] == "<redacted>" and run.data.params["max_tokens"] == "16"
    assert json.loads(run.data.params["extra"]) == {"extra_headers": {"X-Api-Key": "<redacted>"}}
    assert json.loads(run.data.tags["agility.judge"]) == {"provider": "openai", "api_key": "<redacted>"}
    assert run.data.metrics == {"token_f1": 0.5}
    assert "sk-live" not in json.dumps([run.data.params, run.data.tags])
