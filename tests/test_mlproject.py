"""The MLproject entry points run through `mlflow run`, nesting agility's runs under the project's run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from mlflow import MlflowClient

from tests.helpers import REPO, write_project


def test_mlflow_run_entry_point_nests_runs_under_the_project_run(tmp_path: Path) -> None:
    config = write_project(tmp_path, experiment="mlproject-test")
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "run", "-P", f"config={config}",
         "--env-manager", "local", "--experiment-name", "mlproject-test"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name("mlproject-test")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    source = runs["source"]
    parents = [r for r in runs.values() if r.data.tags.get("mlflow.project.entryPoint") == "run"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert source.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert source.info.status == "FINISHED" and source.data.metrics["n_samples"] == 3


def test_without_experiment_name_the_parent_is_in_the_configs_experiment_with_its_children(tmp_path: Path, tracking: str) -> None:
    """`mlflow run` alone opens its run in Default; the UI must still show a parent with its children in the config's experiment."""
    experiment = f"mlproject-{uuid.uuid4().hex[:8]}"
    config = write_project(tmp_path, experiment=experiment)
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "run", "-P", f"config={config}", "--env-manager", "local"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "run"]
    (source,) = [r for r in runs if r.info.run_name == "source"]
    assert source.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.status == "FINISHED" and source.info.status == "FINISHED"
    project_run = client.get_run(parent.data.tags["agility.project_run"])  # the run `mlflow run` opened, in Default
    assert project_run.info.experiment_id != parent.info.experiment_id
    assert project_run.data.tags["agility.runs_under"].startswith(parent.info.run_id)
