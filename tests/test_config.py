"""Config validation: unknown keys, wrong types, missing files, unknown providers and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from agility_mlflow.config import load_config
from agility_mlflow.errors import InputError
from agility_mlflow.evaluation import prepare
from tests.helpers import write_project


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        prepare(path)
    return str(info.value)


def test_valid_config_resolves_paths_relative_to_itself(tmp_path: Path) -> None:
    path = write_project(tmp_path, tracking_uri="sqlite:///store/mlflow.db")
    config = load_config(path)
    assert config.resolve(config.dataset.path) == tmp_path / "golden.csv"
    assert config.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_project(tmp_path, experimnet="typo")
    assert _error(path) == f"{path}: unknown key 'experimnet'"


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write_project(tmp_path, candidates=[{"name": "c", "provider": "local", "model_id": "m", "params": {"temprature": 0.1}}])
    assert _error(path) == f"{path}: unknown key 'candidates[0].params.temprature'"


def test_wrong_type(tmp_path: Path) -> None:
    path = write_project(tmp_path, run={"concurrency": "many"})
    assert _error(path).startswith(f"{path}: key 'run.concurrency': Input should be a valid integer")


def test_unknown_provider(tmp_path: Path) -> None:
    path = write_project(tmp_path, candidates=[{"name": "c", "provider": "vertex", "model_id": "m"}])
    assert _error(path) == f"{path}: key 'candidates[0].provider': unknown provider 'vertex' (expected one of: local, openai, bedrock, replay)"


def test_unknown_metric(tmp_path: Path) -> None:
    path = write_project(tmp_path, metrics=["exact_match", "accuracy_score"])
    assert _error(path).startswith("unknown metric 'accuracy_score' (known: ")


def test_missing_dataset_file(tmp_path: Path) -> None:
    path = write_project(tmp_path, dataset={"path": "nope.csv"})
    assert _error(path) == f"{path}: key 'dataset.path': file not found: {tmp_path / 'nope.csv'}"


def test_missing_config_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "absent.yaml") == f"{tmp_path / 'absent.yaml'}: config file not found"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "agility.yaml"
    path.write_text("experiment: x\ndataset: {path: [\n", encoding="utf-8")
    assert _error(path).startswith(f"{path}, line 3: invalid YAML")


def test_unknown_prompt_reference(tmp_path: Path) -> None:
    path = write_project(tmp_path, candidates=[{"name": "c", "provider": "local", "model_id": "m", "prompts": ["nope"]}])
    assert _error(path) == f"{path}: key 'candidates[0].prompts': unknown prompt 'nope' (known: qa)"


def test_template_variable_without_column(tmp_path: Path) -> None:
    path = write_project(tmp_path, prompts=[{"name": "qa", "template": "{{question}} for {{ticker}}"}])
    assert _error(path).startswith("prompt 'qa' (inline): placeholder '{{ticker}}' has no column in golden.csv")


def test_secrets_are_redacted_from_the_logged_config(tmp_path: Path) -> None:
    path = write_project(
        tmp_path, candidates=[{"name": "c", "provider": "openai", "model_id": "gpt-4o", "api_key": "sk-secret-123"}]
    )
    public = load_config(path).public_dict()
    assert public["candidates"][0]["api_key"] == "<redacted>"
    assert "sk-secret-123" not in repr(load_config(path))
