"""The README's "Team setup", as a team runs it: one `mlflow server` on PostgreSQL with a served artifact
store, and against it `agility run`, `sweep` with two workers sharing an Optuna study on PostgreSQL,
`compare`, `register` and `check`, everything read back through MlflowClient.

The candidate is an OpenAI-protocol stand-in on 127.0.0.1 (through the real openai client) that answers
as the source model did, so the comparison has a winner to register and check.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.helpers import GOLDEN_ROWS, REPO, MlflowServer, run_cli, write_csv, write_project
from tests.openai_server import start_standin

SOURCE_ANSWERS = {row["question"]: row["answer_source_llm"] for row in GOLDEN_ROWS}


def _answer_like_the_source(request: dict[str, Any]) -> str:
    user = request["messages"][-1]["content"]
    return next(answer for question, answer in SOURCE_ANSWERS.items() if question in user)


def _sweep_worker(config: Path, storage: str, server: str) -> subprocess.Popen:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "agility_mlflow", "sweep", str(config), "--storage", storage, "--study", "team", "--n-trials", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": server},
    )


def test_a_team_runs_sweeps_compares_registers_and_checks_on_one_postgres_server(
    tmp_path: Path, new_postgres_database: Callable[[], str], monkeypatch: Any
) -> None:
    backend_store, optuna_storage = new_postgres_database(), new_postgres_database()
    assert backend_store.startswith("postgresql+psycopg://")
    with MlflowServer(tmp_path / "server", store_uri=backend_store) as server, \
            start_standin(latency_s=0.05, answer=_answer_like_the_source) as model:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
        candidate = {"name": "mini", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": model.url,
                     "api_key_env": "AGILITY_TEST_NO_KEY", "params": {"max_tokens": 32}}
        config = write_project(
            tmp_path, experiment="team", candidates=[candidate], metrics=["token_f1", "exact_match"],
            decision={"min_samples": 2, "primary": ["token_f1"]}, run={"concurrency": 2, "traces": False},
            sweep={"params": {"temperature": {"choices": [0.0, 0.5, 1.0]}}, "sampler": "random", "slices": 1},
        )
        ran = run_cli("run", str(config))
        workers = [_sweep_worker(config, optuna_storage, server) for _ in range(2)]
        swept = [(w, *w.communicate(timeout=600)) for w in workers]
        compared = run_cli("compare", str(config), "--output", str(tmp_path / "report"))
        registered = run_cli("register", str(config), "--name", "app.team")
        write_csv(tmp_path / "refreshed.csv", GOLDEN_ROWS)
        checked = run_cli("check", "--model", "models:/app.team@champion", "--dataset", str(tmp_path / "refreshed.csv"))

        assert ran.returncode == 0, ran.stderr[-2000:]
        assert [w.returncode for w, _, _ in swept] == [0, 0], [err[-2000:] for _, _, err in swept]
        assert compared.returncode == 0, compared.stderr[-2000:]
        assert registered.returncode == 0, registered.stderr[-2000:]
        assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]

        # Everything is on the one server: its PostgreSQL store holds the runs, its artifact store their files.
        client = MlflowClient(server)
        experiment = client.get_experiment_by_name("team")
        assert experiment.artifact_location.startswith("mlflow-artifacts:/")
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        roles = sorted(r.data.tags.get("agility.role", "") for r in runs)
        assert roles == ["candidate", "check", "comparison", "registration", "source", "study", *["trial"] * 4], roles
        assert not [r for r in runs if r.info.status == "RUNNING"]
        candidate_run = next(r for r in runs if r.data.tags.get("agility.role") == "candidate")
        assert candidate_run.data.metrics["token_f1"] == next(r for r in runs if r.data.tags.get("agility.role") == "source").data.metrics["token_f1"]
        table = json.loads(Path(client.download_artifacts(candidate_run.info.run_id, "eval_results.json", tempfile.mkdtemp())).read_text())
        assert len(table["data"]) == 3
        assert list((tmp_path / "server" / "artifacts").rglob("eval_results.json")), "artifacts are stored by the server, not by the clients"

        # The two workers shared one study on PostgreSQL: exactly 4 trials, each one MLflow run under one study run.
        study = optuna.load_study(study_name="team", storage=optuna_storage)
        assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4
        trial_runs = {r.info.run_id for r in runs if r.data.tags.get("agility.role") == "trial"}
        assert trial_runs == {t.user_attrs["mlflow_run_id"] for t in study.trials if t.state == TrialState.COMPLETE}

        # The winner is registered on the server, and the check ran against the registered model.
        version = client.get_model_version_by_alias("app.team", "champion")
        winner = re.search(r"^winner: (\S+)", compared.stdout, re.MULTILINE)
        assert winner, compared.stdout
        assert version.tags["agility.verdict.outcome"] == "pass"
        assert client.get_run(version.tags["agility.registered_from_run"]).data.tags["agility.role"] in ("candidate", "trial")
        check_run = next(r for r in runs if r.data.tags.get("agility.role") == "check")
        assert check_run.data.tags["agility.check"] == "pass"
        assert checked.stdout.strip().splitlines()[-1].startswith("pass: models:/app.team@champion")
