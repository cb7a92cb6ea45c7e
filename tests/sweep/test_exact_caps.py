"""Exact caps across sweep workers on PostgreSQL, and the budget of ``agility run``.

Several worker processes share one Optuna study on PostgreSQL 127.0.0.1:5432 and one MLflow server.
Their model is an OpenAI-protocol stand-in on 127.0.0.1 (through the real openai client) that takes a
little time per call, so workers are mid-trial together when the study reaches its total: the race that
made two workers with ``--n-trials 6`` complete 7 trials.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from agility_mlflow.sweep import _study
from tests.helpers import REPO, run_cli, write_project
from tests.openai_server import start_standin

PRICING = {"gpt-4o-mini": {"input": 2000.0, "output": 8000.0}, "gpt-4o": {"input": 100.0, "output": 400.0}}


def _answer(request: dict[str, Any]) -> str:
    """Candidates answer "Yes"; as a judge it gives 7 with a reason."""
    if "impartial judge" in request["messages"][0]["content"]:
        return json.dumps({"reasoning": "close enough", "score": 7})
    return "Yes"


def _candidate(url: str) -> dict[str, Any]:
    return {"name": "mini", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": url, "api_key_env": "AGILITY_TEST_NO_KEY",
            "stream": False, "params": {"max_tokens": 16}}


def _project(tmp_path: Path, url: str, experiment: str, **extra: Any) -> Path:
    sweep = {"params": {"temperature": {"choices": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}}, "sampler": "random",
             "slices": 1, "objective": "token_f1"}
    return write_project(tmp_path, experiment=experiment, candidates=[_candidate(url)], pricing=PRICING, sweep=sweep,
                         run={"concurrency": 1, "traces": False}, **extra)


def _workers(config: Path, storage: str, study: str, tracking: str, count: int, *extra: str) -> list[subprocess.CompletedProcess]:
    env = {"PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": tracking}
    import os

    processes = [
        subprocess.Popen([sys.executable, "-m", "agility_mlflow", "sweep", str(config), "--storage", storage, "--study", study,
                          "--tracking-uri", tracking, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
        for _ in range(count)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def _race(storage_url: str, study_name: str, workers: int, total: int, budget: float | None, reserve: float) -> optuna.Study:
    """``workers`` threads, each with its own connection pool, ask, claim and finish trials as sweep workers do."""
    optuna.create_study(study_name=study_name, storage=storage_url)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        study = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(storage_url))
        while True:
            trial = study.ask()
            claim = _study.claim(study, trial, total_trials=total, reserve_usd=reserve, budget_usd=budget, poll_s=0.01)
            if claim.refused:
                study.tell(trial, state=TrialState.FAIL)
                return
            time.sleep(rng.random() * 0.05)
            trial.set_user_attr("spent_usd", reserve * rng.uniform(0.5, 1.0))
            study.tell(trial, 1.0)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    return optuna.load_study(study_name=study_name, storage=storage_url)


def test_claims_hold_the_total_and_the_budget_exactly_over_repeated_races(postgres_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for round_number in range(3):
        study = _race(postgres_url, f"trials-{round_number}", workers=4, total=6, budget=None, reserve=1.0)
        assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 6
        study = _race(postgres_url, f"budget-{round_number}", workers=4, total=100, budget=4.5, reserve=1.0)
        ran = [t for t in study.trials if t.state == TrialState.COMPLETE]
        spent = sum(t.user_attrs["spent_usd"] for t in ran)
        assert spent <= 4.5 and len(ran) >= 4  # each trial spends at most its 1.0 reservation
        assert all(t.system_attrs["agility.claim"] == "budget" for t in study.trials if t.state == TrialState.FAIL)


def test_a_queued_retry_of_a_killed_trial_is_run_within_the_remaining_trials() -> None:
    # A killed trial fails and its configuration is queued again (WAITING): the queued trial holds a place, yet
    # study.optimize runs it within its own n_trials, so it must not also be subtracted from what is left to ask.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    first = study.ask()
    assert _study.claim(study, first, total_trials=4, reserve_usd=0.0, budget_usd=None).refused is None
    study.tell(first, 1.0)
    killed = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    _study.claim(study, killed, total_trials=4, reserve_usd=0.0, budget_usd=None)
    study._storage.set_trial_state_values(killed._trial_id, TrialState.FAIL)
    study.enqueue_trial(killed.params)
    assert _study.trials_to_ask(study, 4) == 3

    def objective(trial: optuna.Trial) -> float:
        if _study.claim(study, trial, total_trials=4, reserve_usd=0.0, budget_usd=None).refused:
            raise _study.ClaimRefused("full")
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=_study.trials_to_ask(study, 4), catch=(_study.ClaimRefused,))
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4
    assert study.trials[2].params == killed.params  # the queued retry ran first


def test_n_trials_is_exact_for_three_worker_processes(tmp_path: Path, tracking: str, postgres_url: str) -> None:
    client = MlflowClient(tracking)
    study_name = f"exact-{uuid.uuid4().hex[:6]}"
    with start_standin(latency_s=0.15, answer=_answer) as server:
        config = _project(tmp_path, server.url, study_name)
        results = _workers(config, postgres_url, study_name, tracking, 3, "--n-trials", "6")
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr[-2000:] for r in results]
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6, [(t.number, t.state.name, t.system_attrs.get("agility.claim")) for t in study.trials]
    # A trial refused its place never ran: no params, no MLflow run, state FAIL.
    refused = [t for t in study.trials if t.system_attrs.get("agility.claim") != "granted"]
    assert all(t.state == TrialState.FAIL and not t.params and "mlflow_run_id" not in t.user_attrs for t in refused)
    experiment = client.get_experiment_by_name(study_name)
    trial_runs = client.search_runs([experiment.experiment_id], filter_string="tags.`agility.role` = 'trial'")
    assert len(trial_runs) == 6 and {r.info.status for r in trial_runs} == {"FINISHED"}
    assert all(re.search(r"study \S+: 6 trials", r.stdout) for r in results), [r.stdout for r in results]
    assert not any("failed with parameters" in r.stderr for r in results)
    # Started together, the workers log one source run between them: the first logs it, the others reuse it.
    (source,) = client.search_runs([experiment.experiment_id], filter_string="tags.`agility.role` = 'source'")
    assert source.info.status == "FINISHED"
    assert all(f"source run {source.info.run_id}" in r.stdout for r in results), [r.stdout for r in results]


def test_budget_with_judge_calls_is_never_crossed_by_two_workers(tmp_path: Path, tracking: str, postgres_url: str) -> None:
    study_name = f"budget-{uuid.uuid4().hex[:6]}"
    with start_standin(latency_s=0.1, answer=_answer) as server:
        judge = {"provider": "openai", "model_id": "gpt-4o", "base_url": server.url, "api_key_env": "AGILITY_TEST_NO_KEY",
                 "params": {"max_tokens": 64}, "max_attempts": 2}
        config = _project(tmp_path, server.url, study_name, metrics=["token_f1", "llm_judge"], judge=judge)
        results = _workers(config, postgres_url, study_name, tracking, 2, "--n-trials", "50", "--budget-usd", "3")
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    # The estimate names the judge's calls: 3 samples x 1 prompt x 2 attempts per trial.
    estimate = re.search(r"per trial (\d+) model calls \(\$([\d.]+)\) \+ (\d+) judge calls \(\$([\d.]+)\) = \$([\d.]+)", results[0].stderr)
    assert estimate, results[0].stderr[-2000:]
    model_calls, _model_usd, judge_calls, judge_usd, per_trial = estimate.groups()
    assert (int(model_calls), int(judge_calls)) == (3, 6) and float(judge_usd) > 0
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    ran = [t for t in study.trials if t.system_attrs.get("agility.claim") == "granted"]
    spent = sum(t.user_attrs["spent_usd"] for t in ran)
    reserved = [t.system_attrs["agility.reserved_usd"] for t in study.trials]
    assert reserved == [pytest.approx(float(per_trial), abs=1e-4)] * len(study.trials)
    assert ran and all(t.state == TrialState.COMPLETE and t.user_attrs["spent_usd"] > 0 for t in ran)
    # Stopped by the budget, never crossing it: each worker's last claim found no room for another reservation.
    assert 0 < spent <= 3.0 < spent + float(per_trial)
    refused = [t for t in study.trials if t.system_attrs["agility.claim"] != "granted"]
    assert {t.system_attrs["agility.claim"] for t in refused} <= {"budget"}  # a worker may stop before asking: no trial
    assert all("stopped by the budget" in r.stdout for r in results)
    assert all("WARNING: budget: $" in r.stderr and "over the budget of $3.0000: no further trial" in r.stderr for r in results)


def test_run_prints_its_estimate_and_never_starts_a_run_past_the_budget(tmp_path: Path, tracking: str) -> None:
    from agility_mlflow.evaluation import estimate_project, prepare

    with start_standin(latency_s=0.0, answer=_answer) as server:
        judge = {"provider": "openai", "model_id": "gpt-4o", "base_url": server.url, "api_key_env": "AGILITY_TEST_NO_KEY",
                 "params": {"max_tokens": 64}, "max_attempts": 1}
        prompts = [{"name": "qa", "template": "Context: {{context}}\nQuestion: {{question}}"},
                   {"name": "qa-long", "template": "Context: {{context}}\nQuestion: {{question}}\n" + "Think it over. " * 2000}]
        config = write_project(tmp_path, experiment="run-budget", candidates=[_candidate(server.url)], prompts=prompts, pricing=PRICING,
                               metrics=["token_f1", "llm_judge"], judge=judge, run={"concurrency": 1, "traces": False})
        source, short, long = estimate_project(prepare(config))
        too_small = run_cli("run", str(config), "--budget-usd", f"{source.total_usd / 2:.4f}")
        calls_before = server.calls
        # Room for the source and the short prompt's worst cases, not for the long prompt's as well.
        budget = source.total_usd + short.total_usd
        enough_for_two = run_cli("run", str(config), "--budget-usd", f"{budget:.4f}")
    assert (source.model_calls, source.judge_calls, short.model_calls, short.judge_calls) == (0, 3, 3, 3)
    assert long.model_usd > 10 * short.model_usd > 0
    # The estimate comes first, with the model's and the judge's calls; a first run past the budget is never started.
    assert too_small.returncode == 1
    total = source + short + long
    assert f"estimate: 3 runs x 3 samples: 6 model calls (${total.model_usd:.4f}) + 9 judge calls (${total.judge_usd:.4f})" in too_small.stderr
    assert "'source' may cost up to $" in too_small.stderr and "3 runs not started: source, mini/qa, mini/qa-long" in too_small.stderr
    assert calls_before == 0
    assert enough_for_two.returncode == 1, enough_for_two.stderr[-2000:]
    assert "'mini/qa-long' may cost up to $" in enough_for_two.stderr and "1 runs not started: mini/qa-long" in enough_for_two.stderr
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("run-budget").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["mini/qa", "source"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    spent = sum(r.data.metrics.get("cost_usd_total", 0.0) + r.data.metrics["judge_cost_usd_total"] for r in runs)
    assert 0 < spent <= budget
