"""Bad input from the command line and oversized data: one clear line, exit code 2, no run started."""

from __future__ import annotations

from pathlib import Path

from agility_mlflow.evaluation import prepare
from tests.helpers import GOLDEN_ROWS, run_cli, write_csv, write_project


def test_a_10_mb_cell_is_data(tmp_path: Path) -> None:
    big = "Revenue | 1,577.0\n" * (10 * 1024 * 1024 // 18)
    rows = [{**GOLDEN_ROWS[0], "context": big}, GOLDEN_ROWS[1]]
    config = write_project(tmp_path, rows=rows)
    project = prepare(config)
    assert len(project.dataset.rows[0]["context"]) == len(big) > 10_000_000
    messages = project.configurations[0].template.render(project.dataset.rows[0])
    assert big in messages[-1]["content"]


def test_missing_config_argument(tmp_path: Path) -> None:
    result = run_cli("run")
    assert result.returncode == 2
    assert "Missing argument 'CONFIG'" in result.stderr


def test_limit_must_be_positive(tmp_path: Path) -> None:
    result = run_cli("run", str(write_project(tmp_path)), "--limit", "0")
    assert result.returncode == 2
    assert "Invalid value for '--limit': 0 is not in the range x>=1." in result.stderr


def test_unknown_candidate(tmp_path: Path) -> None:
    candidate = {"name": "local", "provider": "local", "model_id": "smollm2-135m-instruct"}
    config = write_project(tmp_path, candidates=[candidate])
    result = run_cli("run", str(config), "--candidate", "gpt-5")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: agility.yaml: --candidate 'gpt-5' is not a candidate (known: local)"


def test_missing_api_key_names_the_candidate(tmp_path: Path) -> None:
    candidate = {"name": "gpt", "provider": "openai", "model_id": "gpt-4o-mini", "api_key_env": "AGILITY_NO_SUCH_KEY"}
    config = write_project(tmp_path, candidates=[candidate])
    result = run_cli("run", str(config), env={"OPENAI_BASE_URL": ""})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: agility.yaml: candidate 'gpt': no API key for OpenAI model 'gpt-4o-mini': set AGILITY_NO_SUCH_KEY or base_url"
    )


def test_sweep_without_a_sweep_section(tmp_path: Path) -> None:
    result = run_cli("sweep", str(write_project(tmp_path)))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: agility.yaml: no 'sweep:' section to run"


def test_dataset_given_as_a_directory(tmp_path: Path) -> None:
    (tmp_path / "data.csv").mkdir()
    write_csv(tmp_path / "golden.csv", GOLDEN_ROWS)
    config = write_project(tmp_path, dataset={"path": "data.csv"})
    result = run_cli("run", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {config}: key 'dataset.path': file not found")
