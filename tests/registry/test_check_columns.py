"""`agility check` on a golden set kept in the team's own column names, on a real MLflow server.

Registration records the config's ``dataset.columns``; check applies them to the refreshed file, and
``--columns KEY=COLUMN`` overrides them for a file named otherwise (the AWS reference's FinanceBench
files: ``financebench_id``, ``ground_truths``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from click.testing import CliRunner
from mlflow import MlflowClient

from agility_mlflow.cli import main
from agility_mlflow.evaluation import run_project
from tests.helpers import GOLDEN_ROWS, write_csv, write_project
from tests.openai_server import start_standin

# The team's names for the golden columns.
TEAM = {"sample_id": "financebench_id", "question": "query", "context": "evidence", "answer_ground_truth": "ground_truths",
        "answer_source_llm": "prod_answer"}
ECHO = {"name": "echo", "provider": "openai", "model_id": "gpt-4o-mini", "stream": False}


def _in_schema(names: dict[str, str], rows: list[dict] = GOLDEN_ROWS) -> list[dict]:
    return [{names[golden]: row[golden] for golden in names} for row in rows]


def test_check_reads_the_refreshed_set_in_the_teams_schema(tracking: str, tmp_path: Path) -> None:
    # A called model that answers as production did (a replay candidate cannot be registered: nothing to call).
    recorded = {row["question"]: row["answer_source_llm"] for row in GOLDEN_ROWS}
    answer = lambda request: next(a for q, a in recorded.items() if q in request["messages"][-1]["content"])  # noqa: E731
    with start_standin(latency_s=0.0, answer=answer) as server:
        _register_and_check(tracking, tmp_path, {**ECHO, "base_url": server.url})


def _register_and_check(tracking: str, tmp_path: Path, candidate: dict) -> None:
    experiment = f"columns-{uuid.uuid4().hex[:8]}"
    model = f"app.columns-{uuid.uuid4().hex[:8]}"
    config = write_project(tmp_path, experiment=experiment, rows=_in_schema(TEAM), dataset={"path": "golden.csv", "columns": TEAM},
                           candidates=[candidate], metrics=["token_f1", "exact_match"], source=None)
    (summary,) = [s for s in run_project(config, tracking_uri=tracking, progress=False) if s.name == "echo"]
    registered = CliRunner().invoke(main, ["register", str(config), "--name", model, "--run-id", summary.run_id, "--tracking-uri", tracking, "--force"])
    assert registered.exit_code == 0, registered.stderr[-2000:]
    client = MlflowClient(tracking)
    version = client.get_model_version_by_alias(model, "champion")
    assert json.loads(version.tags["agility.dataset_columns"]) == TEAM

    # The refreshed set, as the team keeps it: same names, one sample more.
    refreshed = write_csv(tmp_path / "refreshed.csv", _in_schema(TEAM, [*GOLDEN_ROWS, {**GOLDEN_ROWS[2], "sample_id": "q4"}]))
    checked = CliRunner().invoke(main, ["check", "--model", f"models:/{model}@champion", "--dataset", str(refreshed), "--tracking-uri", tracking])
    assert checked.exit_code == 0, checked.stdout + checked.stderr[-2000:]
    run_id = checked.stdout.strip().rsplit("(check run ", 1)[1].rstrip(")")
    run = client.get_run(run_id)
    assert run.data.tags["agility.check"] == "pass" and run.info.status == "FINISHED"
    assert run.data.metrics["n_samples"] == 4 and run.data.metrics["exact_match"] == 0.5  # "Yes" == "Yes" twice

    # Another export names two columns otherwise: --columns maps them, over the registered renames.
    other = dict(TEAM, sample_id="id", answer_ground_truth="truth")
    renamed = write_csv(tmp_path / "export.csv", _in_schema(other))
    overridden = CliRunner().invoke(main, ["check", "--model", f"models:/{model}@champion", "--dataset", str(renamed), "--tracking-uri", tracking,
                                           "--columns", "sample_id=id", "--columns", "answer_ground_truth=truth"])
    assert overridden.exit_code == 0, overridden.stdout + overridden.stderr[-2000:]
    assert "token_f1 +0.000 [0.000, 0.000] on 3 samples paired with the registered run: within margin 0.05" in overridden.stdout
    without = CliRunner().invoke(main, ["check", "--model", f"models:/{model}@champion", "--dataset", str(renamed), "--tracking-uri", tracking])
    assert without.exit_code == 2
    assert "the column renames {'answer_ground_truth': 'ground_truths', " in without.stderr  # says where the mapping came from
    assert without.stderr.splitlines()[-2:] == [
        "error: export.csv: missing column 'ground_truths' (mapped to 'answer_ground_truth' by dataset.columns)",
        "error: export.csv: missing column 'financebench_id' (mapped to 'sample_id' by dataset.columns)",
    ]


def test_a_malformed_columns_pair_is_one_line() -> None:
    result = CliRunner().invoke(main, ["check", "--model", "models:/app.qa@champion", "--dataset", "golden.csv", "--columns", "sample_id"])
    assert (result.exit_code, result.stderr) == (2, "error: --columns 'sample_id': use KEY=COLUMN, e.g. sample_id=financebench_id\n")
