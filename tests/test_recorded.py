"""Recorded candidates (``provider: replay``): any model's outputs from golden columns or a file, decided by compare."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from agility_mlflow.cli import main
from agility_mlflow.compare import compare, read_results
from agility_mlflow.config import load_config
from agility_mlflow.errors import InputError
from agility_mlflow.evaluation import run_project
from agility_mlflow.registry import register
from tests.helpers import GOLDEN_ROWS, REPO, write_csv, write_project

# Claude's recorded answers as extra columns of the golden file.
CLAUDE = {"q1": ("$1577.00 million", "0.8", "12"), "q2": ("$212.5 million", "1.1", "10"), "q3": ("Yes", "0.4", "2")}
ROWS = [{**row, "claude": CLAUDE[row["sample_id"]][0], "claude_s": CLAUDE[row["sample_id"]][1],
         "claude_out": CLAUDE[row["sample_id"]][2]} for row in GOLDEN_ROWS]
FROM_COLUMNS = {"name": "claude", "provider": "replay", "model_id": "claude-3-5-haiku-20241022",
                "columns": {"output": "claude", "latency": "claude_s", "output_tokens": "claude_out"}}
FROM_FILE = {"name": "mistral", "provider": "replay", "model_id": "mistral-large-2407", "path": "mistral.csv",
             "columns": {"sample_id": "id", "output": "text", "latency": "seconds", "input_tokens": "tin", "output_tokens": "tout"}}
MISTRAL = [{"id": "q3", "text": "No", "seconds": "0.5", "tin": "100", "tout": "1"},  # in its own order: joined on the id
           {"id": "q1", "text": "Revenue was $1577.0 million", "seconds": "0.9", "tin": "110", "tout": "5"},
           {"id": "q2", "text": "$212.5 million", "seconds": "0.7", "tin": "120", "tout": "3"}]


def test_recorded_candidates_from_columns_and_from_a_file_are_normal_candidate_runs(tmp_path: Path) -> None:
    write_csv(tmp_path / "mistral.csv", MISTRAL)
    config = write_project(tmp_path, rows=ROWS, candidates=[FROM_COLUMNS, FROM_FILE], run={"concurrency": 2, "traces": False})
    summaries = {s.name: s for s in run_project(config)}
    assert sorted(summaries) == ["claude", "mistral", "source"]
    client = MlflowClient()
    claude = client.get_run(summaries["claude"].run_id)
    assert (claude.data.tags["agility.role"], claude.data.params["provider"]) == ("candidate", "replay")
    assert claude.data.params["model_id"] == "claude-3-5-haiku-20241022"
    assert claude.data.metrics["latency_p50_s"] == 0.8 and claude.data.metrics["exact_match"] == 1.0
    assert "input_tokens_mean" not in claude.data.metrics  # not recorded: unknown, never 0
    rows = {r["sample_id"]: r for r in read_results(summaries["mistral"].run_id, client=client)}
    assert {k: (r["output"], r["latency_s"], r["input_tokens"]) for k, r in rows.items()} == {
        "q1": ("Revenue was $1577.0 million", 0.9, 110), "q2": ("$212.5 million", 0.7, 120), "q3": ("No", 0.5, 100)}
    assert client.get_run(summaries["mistral"].run_id).data.metrics["n_errors"] == 0

    with pytest.raises(InputError, match=r"replays recorded outputs \(provider: replay\): there is no model to call"):
        register(config, "app.qa", run_id=summaries["claude"].run_id)


# Expected stderr of `agility run`; {dir} stands for the project folder.
JOIN_ERRORS = {
    "ids missing from the file": (
        MISTRAL[:1], {}, "mistral.csv: no recorded output of the replayed model 'mistral' for sample_ids 'q1', 'q2' of golden.csv (joined on id)"),
    "ids the golden file lacks": (
        [*MISTRAL, {**MISTRAL[0], "id": "q9"}], {},
        "mistral.csv: sample_id 'q9' of the replayed model 'mistral' not in golden.csv (joined on id)"),
    "a recorded column that is not there": (
        MISTRAL, {"output": "answer"}, "mistral.csv: missing column 'answer' (needed by the replayed model 'mistral')"),
    "a recorded latency that is not a number": (
        [MISTRAL[0], {**MISTRAL[1], "seconds": "fast"}, MISTRAL[2]], {},
        "mistral.csv, row 2, column 'seconds': expected a number, got 'fast'"),
    "no file": (None, {}, "the replayed model 'mistral': recorded outputs file not found: {dir}/mistral.csv"),
}


@pytest.mark.parametrize("name", list(JOIN_ERRORS))
def test_join_errors_exit_2_naming_the_ids(name: str, tmp_path: Path) -> None:
    recorded, columns, expected = JOIN_ERRORS[name]
    if recorded is not None:
        write_csv(tmp_path / "mistral.csv", recorded)
    candidate = {**FROM_FILE, "columns": {**FROM_FILE["columns"], **columns}}
    result = CliRunner().invoke(main, ["run", str(write_project(tmp_path, candidates=[candidate]))])
    assert (result.exit_code, result.stderr) == (2, "error: " + expected.replace("{dir}", str(tmp_path)) + "\n")


def test_a_recorded_column_missing_from_the_golden_file_and_columns_on_a_called_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(write_project(tmp_path, candidates=[FROM_COLUMNS]))])
    assert (result.exit_code, result.stderr) == (2, "error: golden.csv: missing column 'claude' (needed by the replayed model 'claude')\n")
    config = write_project(tmp_path, candidates=[{**FROM_COLUMNS, "provider": "openai"}])
    result = CliRunner().invoke(main, ["run", str(config)])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {config}: key 'candidates[0]': 'columns' names recorded outputs: it needs provider: replay, not openai\n")


def test_the_example_compares_three_recorded_models(tmp_path: Path) -> None:
    project = tmp_path / "recorded-models"
    shutil.copytree(REPO / "projects" / "recorded-models", project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(project / "agility.yaml")
    summaries = run_project(config.model_copy(update={"run": config.run.model_copy(update={"traces": False})}), tracking_uri=uri)
    assert [(s.role, s.name, s.metrics["n_samples"]) for s in summaries] == [
        ("source", "source", 36.0), ("candidate", "claude-haiku", 36.0), ("candidate", "mistral-large", 36.0)]
    result = compare(project / "agility.yaml", tracking_uri=uri, output=tmp_path / "report")
    outcomes = {v.run.candidate: v.outcome for v in result.verdicts}
    assert outcomes == {"claude-haiku": "pass", "mistral-large": "insufficient"}
    assert result.winner is not None and result.winner.run.candidate == "claude-haiku"
