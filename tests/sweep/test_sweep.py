"""Sweeps on the real local model: runs in MLflow, workers sharing a PostgreSQL study, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from agility_mlflow.sweep import run_sweep
from tests.helpers import GOLDEN_ROWS, write_project
from tests.openai_server import start_standin

LOCAL = {"name": "local", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"max_tokens": 8}}
PROMPTS = [
    {"name": "qa", "template": "Context: {{context}}\nQuestion: {{question}}"},
    {"name": "qa-terse", "template": "{{context}}\n{{question}} Reply with the figure only."},
]


def _sweep_project(tmp_path: Path, experiment: str = "test-migration", candidate: dict = LOCAL, **sweep: object) -> Path:
    settings = {"params": {"max_tokens": {"choices": [4, 8]}}, "objective": "token_f1", "slices": 1, "n_trials": 4, **sweep}
    return write_project(tmp_path, experiment=experiment, candidates=[candidate], prompts=PROMPTS, sweep=settings)


def _served(url: str) -> dict:
    """A candidate on the OpenAI stand-in: the tests of workers and kills prove the study's bookkeeping, not answers."""
    return {"name": "served", "provider": "openai", "model_id": "standin", "base_url": url, "api_key": "k", "stream": False}


def test_sweep_logs_parent_children_and_best(tmp_path: Path) -> None:
    config = _sweep_project(tmp_path, instructions=["", "Answer in one sentence."])
    result = run_sweep(config, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("test-migration")
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["agility.role"] == "study"
    assert parent.data.params["sampler"] == "tpe" and parent.data.params["objective"] == '["token_f1"]'
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4 == result.n_trials
    assert {c.data.tags["agility.role"] for c in children} == {"trial"}
    assert [c.info.status for c in children] == ["FINISHED"] * 4  # one slice: nothing to prune
    assert all("n_samples" in c.data.metrics and "latency_p95_s" in c.data.metrics for c in children)
    best = [c for c in children if c.data.tags.get("agility.best") == "true"]
    assert len(best) == 1
    assert best[0].info.run_id == result.best[0].user_attrs["mlflow_run_id"]
    assert best[0].data.metrics["token_f1"] == pytest.approx(result.best[0].value)
    assert best[0].data.metrics["token_f1"] == max(c.data.metrics["token_f1"] for c in children)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["best_value"] == pytest.approx(result.best[0].value)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in artifacts
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.json", "plots"}
    # Trial runs link the prompt variant they ran; add-on instructions are prompts of their own.
    prompts = {c.data.tags["agility.prompt"].split("/")[1] for c in children}
    assert prompts <= {"qa", "qa-terse", "qa.i5a0dbd", "qa-terse.i5a0dbd"}


def test_rerun_of_a_finished_study_adds_no_trial(tmp_path: Path) -> None:
    config = _sweep_project(tmp_path, n_trials=2)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = run_sweep(config, storage=storage, progress=False)
    again = run_sweep(config, storage=storage, progress=False)
    assert first.n_trials == again.n_trials == 2
    assert first.parent_run_id == again.parent_run_id


def test_budget_stops_before_it_is_crossed(tmp_path: Path) -> None:
    candidate = {**LOCAL, "name": "priced"}
    config = write_project(
        tmp_path, candidates=[candidate], prompts=PROMPTS, pricing={"smollm2-135m-instruct": {"input": 1000.0, "output": 1000.0}},
        sweep={"params": {"max_tokens": {"choices": [4, 8]}}, "n_trials": 10, "slices": 1},
    )
    # the local provider is free; price it through a config override to exercise the budget
    result = run_sweep(config, storage=f"sqlite:///{tmp_path / 'optuna.db'}", budget_usd=0.5, progress=False)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    spent = sum(t.user_attrs.get("spent_usd", 0.0) for t in study.trials)
    assert result.stopped_by_budget
    assert spent <= 0.5
    assert len(study.trials) < 10


REFERENCE = "revenue was one thousand five hundred seventy seven million dollars"


def _words_by_max_tokens(request: dict) -> str:
    """The reference cut to ``max_tokens`` words: a larger budget gives a strictly better token_f1."""
    return " ".join(REFERENCE.split()[: request["max_tokens"]])


def test_a_hopeless_trial_is_pruned_after_its_first_slice_and_its_run_ends_killed(tmp_path: Path) -> None:
    rows = [{**GOLDEN_ROWS[0], "sample_id": f"s{i}", "question": f"Question {i}?", "answer_ground_truth": REFERENCE} for i in range(4)]
    with start_standin(latency_s=0.0, answer=_words_by_max_tokens) as server:
        candidate = {"name": "served", "provider": "openai", "model_id": "standin", "base_url": server.url, "api_key": "k"}
        # Seed 1 visits the grid as 3, 2, 5, 1, 4 words. The median pruner waits for 3 complete trials, then
        # stops a trial whose first slice scores below their median: the 1-word trial, never the 4-word one.
        sweep = {"params": {"max_tokens": {"choices": [1, 2, 3, 4, 5]}}, "sampler": "grid", "seed": 1, "n_trials": 5,
                 "slices": 2, "objective": "token_f1", "pruner": "median"}
        config = write_project(tmp_path, rows=rows, candidates=[candidate], metrics=["token_f1"], sweep=sweep,
                               run={"concurrency": 1, "traces": False})
        result = run_sweep(config, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    states = {t.params["max_tokens"]: t.state for t in study.trials}
    assert states == {3: TrialState.COMPLETE, 2: TrialState.COMPLETE, 5: TrialState.COMPLETE, 1: TrialState.PRUNED, 4: TrialState.COMPLETE}
    runs = {t.params["max_tokens"]: MlflowClient().get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials}
    # The pruned trial's run holds its first slice only, and a partial result is never FINISHED.
    assert {k: (r.info.status, r.data.metrics["n_samples"]) for k, r in runs.items()} == {
        3: ("FINISHED", 4), 2: ("FINISHED", 4), 5: ("FINISHED", 4), 1: ("KILLED", 2), 4: ("FINISHED", 4)}
    assert result.best[0].params["max_tokens"] == 5  # the longest cut of the reference


def _worker(config: Path, storage: str, study: str, tracking: str, n_trials: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agility_mlflow", "sweep", str(config), "--storage", storage, "--study", study,
         "--n-trials", str(n_trials), "--tracking-uri", tracking],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_workers_share_one_postgres_study_without_duplicates(tmp_path: Path, tracking: str, postgres_url: str) -> None:
    study_name = f"agility-test-{uuid.uuid4().hex[:8]}"
    with start_standin(latency_s=0.05) as server:
        config = _sweep_project(tmp_path, experiment=f"pg-{study_name}", candidate=_served(server.url), sampler="random")
        # Two workers start together on an empty database and share one study.
        # An empty database: the workers race to create Optuna's tables, as on a first deployment.
        workers = [_worker(config, postgres_url, study_name, tracking, 6) for _ in range(2)]
        for worker in workers:
            out, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    assert len({t.number for t in study.trials}) == len(study.trials)
    ran = [t for t in study.trials if t.system_attrs.get("agility.claim") == "granted"]
    run_ids = [t.user_attrs["mlflow_run_id"] for t in finished]
    assert len(set(run_ids)) == len(run_ids)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(f"pg-{study_name}")
    runs = client.search_runs([experiment.experiment_id])
    assert sum(r.data.tags.get("agility.role") == "study" for r in runs) == 1
    assert sum(r.data.tags.get("agility.role") == "trial" for r in runs) == len(ran) == 6
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_killed_sweep_resumes_keeping_finished_trials(tmp_path: Path, tracking: str) -> None:
    study_name = f"kill-{uuid.uuid4().hex[:8]}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with start_standin(latency_s=0.3) as server:  # each trial takes a while: the kill lands mid-trial
        config = _sweep_project(tmp_path, experiment=study_name, candidate=_served(server.url), sampler="random",
                                params={"max_tokens": {"low": 16, "high": 48}})
        worker = _worker(config, storage, study_name, tracking, 200)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                trials = optuna.load_study(study_name=study_name, storage=storage).trials
            except KeyError:
                continue
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            if len(done) >= 2 and trials[-1].state == TrialState.RUNNING and "mlflow_run_id" in trials[-1].user_attrs:
                break
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        before = optuna.load_study(study_name=study_name, storage=storage).trials
        killed = [t for t in before if t.state == TrialState.RUNNING]
        kept = [t.number for t in before if t.state == TrialState.COMPLETE]
        assert len(killed) == 1 and len(kept) >= 2

        resumed = _worker(config, storage, study_name, tracking, len(before) + 1)
        out, err = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, err
    after = {t.number: t for t in optuna.load_study(study_name=study_name, storage=storage).trials}
    assert after[killed[0].number].state == TrialState.FAIL
    assert all(after[n].state == TrialState.COMPLETE for n in kept)
    client = MlflowClient(tracking)
    killed_run = client.get_run(killed[0].user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags["agility.error"].startswith("interrupted")
    experiment = client.get_experiment_by_name(study_name)
    assert not client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
