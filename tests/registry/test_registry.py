"""Register the winner as a loadable model and guard it with `agility check`, on the real local model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.evaluation import run_project
from tests.helpers import GOLDEN_ROWS, REPO, new_store, run_cli, write_csv, write_project
from tests.openai_server import start_standin

LOCAL = {"name": "smol", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"temperature": 0.0, "max_tokens": 16}}
REPLAY = {"name": "same", "provider": "replay", "model_id": "gpt-4o-mini"}


@pytest.fixture(scope="module")
def _evaluated_once(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The local and a replayed candidate, evaluated once for the module into a store of its own (SmolLM2 takes seconds)."""
    directory = tmp_path_factory.mktemp("evaluated")
    store = new_store(directory / "mlflow.db")
    config = write_project(directory, candidates=[LOCAL, REPLAY], metrics=["token_f1", "exact_match"],
                           decision={"min_samples": 2, "primary": ["token_f1"]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGILITY_CACHE_DIR", str(directory / "cache"))
        runs = {s.name: s.run_id for s in run_project(config, tracking_uri=store, progress=False)}
    return {"config": config, "runs": runs, "dir": directory, "store": store}


@pytest.fixture
def evaluated(_evaluated_once: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The evaluated project, with this test pointed at its store (each test registers models of its own names)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _evaluated_once["store"])
    return _evaluated_once


def test_the_local_candidate_registers_and_loads_in_a_fresh_process(evaluated: dict) -> None:
    run_id = evaluated["runs"]["smol"]
    result = run_cli("register", str(evaluated["config"]), "--name", "app.qa", "--run-id", run_id, "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(f"models:/app.qa@champion -> version 1 (run {run_id}, prompt prompts:/qa/1)")
    client = MlflowClient()
    version = client.get_model_version_by_alias("app.qa", "champion")
    run = client.get_run(run_id)
    assert version.tags["agility.registered_from_run"] == run_id
    assert json.loads(version.tags["agility.metrics"]) == ["token_f1", "exact_match"]
    assert float(version.tags["agility.score.token_f1"]) == run.data.metrics["token_f1"]
    assert client.get_prompt_version_by_alias("qa", "champion").version == 1
    program = (
        "import mlflow, pandas as pd, json;"
        "m = mlflow.pyfunc.load_model('models:/app.qa@champion');"
        "print(json.dumps(m.predict(pd.DataFrame([{'context': 'Revenue FY2023: $1,577.0 million.', 'question': 'What was revenue?'}]))))"
    )
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=evaluated["dir"], timeout=300,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    answers = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert len(answers) == 1 and answers[0].strip()  # a real answer from SmolLM2 through the registered config


def test_the_comparison_winner_is_registered_with_its_verdict(tmp_path: Path) -> None:
    # A called model that answers as the source did (a recorded candidate wins too, but cannot be registered).
    recorded = {row["question"]: row["answer_source_llm"] for row in GOLDEN_ROWS}
    answer = lambda request: next(a for q, a in recorded.items() if q in request["messages"][-1]["content"])  # noqa: E731
    with start_standin(latency_s=0.0, answer=answer) as server:
        echo = {"name": "echo", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": server.url}
        config = write_project(tmp_path, candidates=[echo], metrics=["token_f1", "exact_match"],
                               decision={"min_samples": 2, "primary": ["token_f1"]})
        runs = {s.name: s.run_id for s in run_project(config, progress=False)}
    compared = run_cli("compare", str(config), "--output", str(tmp_path / "report"))
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert any(line.startswith("winner: echo/qa") for line in compared.stdout.splitlines())
    result = run_cli("register", str(config), "--name", "app.winner")
    assert result.returncode == 0, result.stderr[-2000:]
    version = MlflowClient().get_model_version_by_alias("app.winner", "champion")
    assert version.tags["agility.registered_from_run"] == runs["echo"]
    assert version.tags["agility.verdict.outcome"] == "pass"
    assert "token_f1 +0.000" in version.tags["agility.verdict.reasons"]


def test_a_prompt_name_is_refused_as_a_model_name(evaluated: dict) -> None:
    result = run_cli("register", str(evaluated["config"]), "--name", "qa", "--run-id", evaluated["runs"]["smol"])
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --name 'qa' is a Prompt Registry prompt; models and prompts share names: use another (e.g. app.qa)"


def test_check_passes_on_the_same_data_and_fails_on_a_threshold_or_a_regression(evaluated: dict) -> None:
    assert run_cli("register", str(evaluated["config"]), "--name", "app.gate", "--run-id", evaluated["runs"]["smol"], "--force").returncode == 0
    golden = str(evaluated["dir"] / "golden.csv")
    same = run_cli("check", "--model", "models:/app.gate@champion", "--dataset", golden, "--min", "token_f1=0")
    assert same.returncode == 0, same.stdout + same.stderr[-2000:]
    assert "token_f1 +0.000 [0.000, 0.000] on 3 samples paired with the registered run: within margin 0.05" in same.stdout and same.stdout.splitlines()[-1].startswith("pass: ")
    strict = run_cli("check", "--model", "models:/app.gate@champion", "--dataset", golden, "--min", "token_f1=1.01")
    assert strict.returncode == 1 and " < 1.01" in strict.stdout
    # A refreshed dataset whose references the model no longer matches: the registered score fails to hold.
    refreshed = evaluated["dir"] / "refreshed.csv"
    write_csv(refreshed, [{**row, "answer_ground_truth": "zzz qqq"} for row in GOLDEN_ROWS])
    regressed = run_cli("check", "--model", "models:/app.gate@champion", "--dataset", str(refreshed))
    registered = float(MlflowClient().get_model_version_by_alias("app.gate", "champion").tags["agility.score.token_f1"])
    assert registered > 0.05  # SmolLM2 (greedy) overlaps the references: a drop to 0 is a regression
    assert regressed.returncode == 1 and "outside margin 0.05" in regressed.stdout, regressed.stdout
    check_runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("test-migration").experiment_id], filter_string="tags.`agility.check` = 'fail'")
    assert len(check_runs) >= 1 and all(r.data.tags["agility.role"] == "check" for r in check_runs)


def test_bad_min_and_unknown_model_are_one_line_exit_2(evaluated: dict) -> None:
    golden = str(evaluated["dir"] / "golden.csv")
    bad = run_cli("check", "--model", "models:/app.none@champion", "--dataset", golden)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --model 'models:/app.none@champion': ")
    syntax = run_cli("check", "--model", "models:/x@y", "--dataset", golden, "--min", "token_f1>0.3")
    assert syntax.returncode == 2 and syntax.stderr.strip() == "error: --min 'token_f1>0.3': use METRIC=VALUE, e.g. token_f1=0.4"
