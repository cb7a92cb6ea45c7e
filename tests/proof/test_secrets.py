"""No key or token reaches MLflow, Optuna storage, written files, stdout or stderr, whatever command runs.

Every command runs as a user runs it, with AWS keys, an OpenAI key and a bearer token in the
environment and an inline API key and a gateway bearer header in the config. Then everything is read
back twice: through MLflow's API (runs' params, tags, metric names and artifacts; traces; logged
models and their files; registered model versions; Prompt Registry versions) and as the raw bytes of
every store and file written, so a secret is found however it was encoded.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tests.bedrock_server import start_bedrock_server
from tests.helpers import REPO, run_cli, write_project
from tests.openai_server import start_standin

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDSECRET123",
    "AWS_SECRET_ACCESS_KEY": "planted/aws+secret/key0123456789abcdef",
    "AWS_SESSION_TOKEN": "planted-aws-session-token-zz9",
    "OPENAI_API_KEY": "sk-planted-openai-key-0123456789",
    "AGILITY_TEST_BEARER": "Bearer planted-bearer-token-987",
}
CONFIG_KEY = "sk-planted-config-key-4455"
CONFIG_BEARER = "Bearer planted-gateway-token-6677"  # an AI gateway's auth header, sent through params.extra
EVERY_SECRET = [*SECRETS.values(), CONFIG_KEY, CONFIG_BEARER,
                SECRETS["AGILITY_TEST_BEARER"].split()[1], CONFIG_BEARER.split()[1]]
MODEL = "app.secrets"


def _every_stored_byte(root: Path) -> bytes:
    """The sqlite stores, artifacts and files written under ``root``, as raw bytes."""
    return b"\n".join(path.read_bytes() for path in root.rglob("*") if path.is_file())


def _files_text(root: Path) -> str:
    return "\n".join(path.read_bytes().decode("utf-8", errors="replace") for path in root.rglob("*") if path.is_file())


def _everything_logged(uri: str) -> dict[str, str]:
    """What MLflow at ``uri`` holds, read back through its API, by kind."""
    client = MlflowClient(uri)
    found: dict[str, list[str]] = {"runs": [], "artifacts": [], "traces": [], "logged models": [], "model versions": [], "prompts": []}
    with tempfile.TemporaryDirectory() as scratch:
        for experiment in client.search_experiments(view_type=ViewType.ALL):
            ids = [experiment.experiment_id]
            for run in client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000):
                found["runs"].append(json.dumps([run.info.run_name, run.data.params, run.data.tags, sorted(run.data.metrics)]))
                target = Path(scratch) / run.info.run_id
                mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(target), tracking_uri=uri)
                found["artifacts"].append(_files_text(target))
            found["traces"] += [trace.to_json() for trace in _traces(client, ids)]
            for model in client.search_logged_models(ids):
                target = Path(scratch) / model.model_id
                mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(target), tracking_uri=uri)
                found["logged models"].append(json.dumps([model.params, model.tags]) + _files_text(target))
        for registered in client.search_registered_models():
            for version in client.search_model_versions(f"name = '{registered.name}'"):
                found["model versions"].append(json.dumps([version.tags, version.description, version.source]))
        for prompt in client.search_prompts():
            for version in client.search_prompt_versions(prompt.name):
                found["prompts"].append(json.dumps([version.template, version.tags, version.commit_message]))
    return {kind: "\n".join(texts) for kind, texts in found.items()}


def _traces(client: MlflowClient, experiment_ids: list[str]) -> Iterator[mlflow.entities.Trace]:
    token = None
    while True:
        page = client.search_traces(locations=experiment_ids, max_results=100, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _fill_review(path: Path) -> None:
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    for row in rows:
        row["human_score"], row["human_reasoning"] = "4", "reads fine"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_no_secret_is_logged_anywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The commands run in-process (their stdout and stderr are captured, MLflow's log lines included); what other
    # libraries log at INFO or above is read too, more than a separate process would print.
    caplog.set_level(logging.INFO)
    store = tmp_path / "store"  # the working directory: sqlite stores, ./mlruns artifacts, optuna.db, every output
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**SECRETS, "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_TRACKING_URI": uri}
    with start_standin(latency_s=0.0) as openai_server, start_bedrock_server() as bedrock:
        env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = env["AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"] = bedrock.url
        gateway = {"user": "analyst", "extra_headers": {"cf-aig-authorization": CONFIG_BEARER}}
        candidates = [
            {"name": "gpt", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": openai_server.url,
             "api_key": CONFIG_KEY, "params": {"max_tokens": 16, "extra": gateway}},
            {"name": "env-key", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": openai_server.url,
             "api_key_env": "AGILITY_TEST_BEARER"},
            {"name": "claude", "provider": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"},
        ]
        sweep = {"candidates": ["gpt"], "params": {"max_tokens": {"choices": [8, 16]}}, "n_trials": 2, "slices": 1,
                 "storage": f"sqlite:///{store / 'optuna.db'}", "objective": "token_f1"}
        judge = {"provider": "openai", "model_id": "gpt-4o-mini", "base_url": openai_server.url, "api_key": CONFIG_KEY,
                 "params": {"extra": gateway}}  # registered with the model for `agility check`
        config = write_project(tmp_path, candidates=candidates, sweep=sweep, judge=judge, metrics=["token_f1", "exact_match"])

        def agility(*args: str, expect: int = 0) -> str:
            result = run_cli(*args, env=env, cwd=store)
            outputs.append(result)
            assert result.returncode == expect, (args, result.stderr[-1500:])
            return result.stdout

        outputs: list = []
        agility("run", str(config))
        agility("sweep", str(config))
        agility("migrate", str(config), "--prompt", "qa", "--method", "bedrock", "--target-model", "anthropic.claude-3-haiku-20240307-v1:0")
        agility("compare", str(config), "--output", str(store / "report"))
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("test-migration").experiment_id
        (gpt_run,) = client.search_runs([experiment_id], "tags.`agility.role` = 'candidate' and tags.`agility.candidate` = 'gpt'")
        run_id = gpt_run.info.run_id
        agility("register", str(config), "--name", MODEL, "--run-id", run_id, "--force")
        agility("check", "--model", f"models:/{MODEL}@champion", "--dataset", str(tmp_path / "golden.csv"), "--no-cache")
        agility("review", "export", run_id, "--output", str(store / "review.csv"), "--metric", "token_f1", "--sample", "0")
        _fill_review(store / "review.csv")
        agility("review", "import", run_id, str(store / "review.csv"))
        agility("dataset-from-traces", "test-migration", "--output", str(store / "from_traces.jsonl"))
        bad_config = write_project(tmp_path / "bad", candidates=[{**candidates[0], "model_id": ""}], metrics=["nope"])
        agility("run", str(bad_config), expect=2)

    # The credentials were really in play: each reached its server.
    assert bedrock.requests and all("Authorization" in r.headers for r in bedrock.requests)
    assert "optimize-prompt" in {r.operation for r in bedrock.requests}
    sent = openai_server.headers
    assert ("authorization", f"Bearer {CONFIG_KEY}") in sent and ("cf-aig-authorization", CONFIG_BEARER) in sent
    assert ("authorization", f"Bearer {SECRETS['AGILITY_TEST_BEARER']}") in sent
    assert ("authorization", f"Bearer {SECRETS['OPENAI_API_KEY']}") in sent  # the registered model, under `agility check`

    logged = _everything_logged(uri)
    # Each kind of record was really written, so the scan below reads something.
    assert logged["traces"].count('"trace_id"') >= 12 and "The answer is 42." in logged["traces"]
    # The header's name is kept, its value is not.
    assert json.loads(client.get_run(run_id).data.params["extra"]) == {"extra_headers": {"cf-aig-authorization": "<redacted>"}, "user": "analyst"}
    assert '"sample_id"' in logged["artifacts"] and "human_score" in logged["artifacts"]
    assert "python_function" in logged["logged models"] and "model_id: gpt-4o-mini" in logged["logged models"]
    assert "agility.registered_from_run" in logged["model versions"]
    assert "agility.migrated_from" in logged["prompts"]
    assert list(store.rglob("config.yaml")) and (store / "report" / "report.html").is_file()  # artifacts are in the scanned tree
    stored = _every_stored_byte(store)
    assert len(stored) > 100_000
    printed = "".join(o.stdout + o.stderr for o in outputs) + caplog.text
    for secret in EVERY_SECRET:
        for kind, text in logged.items():
            assert secret not in text, f"{secret!r} found in MLflow {kind}"
        assert secret.encode() not in stored, f"{secret!r} found in the stores or files written"
        assert secret not in printed, f"{secret!r} printed"


def test_no_eval_pickle_or_unsafe_yaml_in_the_package() -> None:
    banned = {"eval", "exec", "pickle", "cloudpickle", "marshal"}
    for path in (REPO / "agility_mlflow").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in banned, f"{path.name}:{node.lineno} calls {node.func.id}()"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = {a.name.split(".")[0] for a in node.names} | {getattr(node, "module", None) or ""}
                assert not names & banned, f"{path.name}:{node.lineno} imports {names & banned}"
        assert not re.search(r"yaml\.load\(|yaml\.unsafe_load|yaml\.Loader\b", path.read_text()), f"unsafe YAML in {path.name}"
