"""No key or token reaches MLflow, Optuna storage, stdout or stderr, whatever command runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bench.standin_server import start_standin
from tests.bedrock_server import start_bedrock_server
from tests.helpers import REPO, run_cli, write_project

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDSECRET123",
    "AWS_SECRET_ACCESS_KEY": "planted/aws+secret/key0123456789abcdef",
    "AWS_SESSION_TOKEN": "planted-aws-session-token-zz9",
    "OPENAI_API_KEY": "sk-planted-openai-key-0123456789",
    "AGILITY_TEST_BEARER": "Bearer planted-bearer-token-987",
}
CONFIG_KEY = "sk-planted-config-key-4455"


def _every_stored_byte(root: Path) -> bytes:
    """The sqlite stores, artifacts and caches under ``root``, as raw bytes."""
    chunks = []
    for path in root.rglob("*"):
        if path.is_file() and "cache" not in path.parts:
            chunks.append(path.read_bytes())
    return b"\n".join(chunks)


def test_no_secret_is_logged_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"  # the working directory: sqlite stores, ./mlruns artifacts, optuna.db
    store.mkdir()
    env = {**SECRETS, "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    env.pop("AWS_BEARER_TOKEN_BEDROCK", None)
    with start_standin(latency_s=0.0) as openai_server, start_bedrock_server() as bedrock:
        env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = env["AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"] = bedrock.url
        candidates = [
            {"name": "gpt", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": openai_server.url,
             "api_key": CONFIG_KEY, "params": {"max_tokens": 16, "extra": {"user": "analyst"}}},
            {"name": "env-key", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": openai_server.url,
             "api_key_env": "AGILITY_TEST_BEARER"},
            {"name": "claude", "provider": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"},
        ]
        sweep = {"candidates": ["gpt"], "params": {"max_tokens": {"choices": [8, 16]}}, "n_trials": 2, "slices": 1,
                 "storage": f"sqlite:///{store / 'optuna.db'}", "objective": "token_f1"}
        config = write_project(tmp_path, candidates=candidates, sweep=sweep)
        outputs = [run_cli("run", str(config), env=env, cwd=store), run_cli("sweep", str(config), env=env, cwd=store),
                   run_cli("migrate", str(config), "--prompt", "qa", "--method", "bedrock", "--target-model",
                           "anthropic.claude-3-haiku-20240307-v1:0", env=env, cwd=store)]
        bad_config = write_project(tmp_path / "bad", candidates=[{**candidates[0], "model_id": ""}], metrics=["nope"])
        bad = run_cli("run", str(bad_config), env=env, cwd=store)
        outputs.append(bad)
    assert [o.returncode for o in outputs] == [0, 0, 0, 2], [o.stderr[-500:] for o in outputs]
    assert bedrock.requests and all("Authorization" in r.headers for r in bedrock.requests)  # the keys were used
    assert "optimize-prompt" in {r.operation for r in bedrock.requests}

    assert (store / "mlruns").is_dir()  # artifacts landed where they are scanned
    stored = _every_stored_byte(store)
    printed = "".join(o.stdout + o.stderr for o in outputs)
    assert len(stored) > 10_000  # runs, traces and tables were really written
    for secret in [*SECRETS.values(), CONFIG_KEY, SECRETS["AGILITY_TEST_BEARER"].split()[1]]:
        assert secret.encode() not in stored, f"{secret} found in the MLflow/Optuna stores"
        assert secret not in printed, f"{secret} printed"


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
