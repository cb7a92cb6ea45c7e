"""Every problem at once: a dataset or config with several problems is fixed in one pass.

Each problem is still one line naming the file, row, column or key; up to 20 are shown, then how many
more; exit code 2 and nothing logged. A CSV separated by ``;`` or tabs is read as such (the header tells),
and a row that does not fit a one-column header says what separates its fields.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from agility_mlflow.cli import main
from tests.helpers import GOLDEN_ROWS, write_project


def _experiment_runs(tracking: str, name: str) -> list:
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(name)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_three_bad_rows_are_reported_together(tracking: str, tmp_path: Path) -> None:
    rows = [dict(GOLDEN_ROWS[0]), {**GOLDEN_ROWS[1], "answer_ground_truth": ""}, {**GOLDEN_ROWS[2], "latency_source_llm": "fast"},
            {**GOLDEN_ROWS[0], "question": "Revenue again?"}]
    experiment = f"problems-{uuid.uuid4().hex[:8]}"
    config = write_project(tmp_path, rows=rows, experiment=experiment)
    result = CliRunner().invoke(main, ["run", str(config), "--tracking-uri", tracking])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: golden.csv, row 3, column 'latency_source_llm': expected a number, got 'fast'",
        "error: golden.csv, row 4, column 'sample_id': duplicate value 'q1' (first at row 1)",
        "error: golden.csv, row 2 (sample_id 'q2'), column 'answer_ground_truth': missing value (needed by metric 'exact_match')",
    ]
    assert _experiment_runs(tracking, experiment) == []  # nothing ran, nothing was logged


def test_past_twenty_problems_the_rest_are_counted(tmp_path: Path) -> None:
    rows = [{**GOLDEN_ROWS[i % 3], "sample_id": f"s{i}", "latency_source_llm": "slow"} for i in range(25)]
    result = CliRunner().invoke(main, ["run", str(write_project(tmp_path, rows=rows))])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 21
    assert lines[0] == "error: golden.csv, row 1, column 'latency_source_llm': expected a number, got 'slow'"
    assert lines[19] == "error: golden.csv, row 20, column 'latency_source_llm': expected a number, got 'slow'"
    assert lines[20] == "error: ... and 5 more problems"


def test_a_config_with_three_problems_names_each_key(tmp_path: Path) -> None:
    config = write_project(tmp_path, run={"concurrency": "many", "concurency": 2},
                           candidates=[{"name": "c", "provider": "local", "model_id": "m", "prompts": ["nope"]}])
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {config}: key 'run.concurrency': Input should be a valid integer, unable to parse string as an integer",
        f"error: {config}: unknown key 'run.concurency'",
    ]  # the cross-references are checked once the keys are right
    config = write_project(tmp_path, candidates=[{"name": "c", "provider": "local", "model_id": "m", "prompts": ["nope"]},
                                                 {"name": "c", "provider": "local", "model_id": "m"}])
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.stderr.splitlines() == [
        f"error: {config}: key 'candidates[1].name': duplicate name 'c'",
        f"error: {config}: key 'candidates[0].prompts': unknown prompt 'nope' (known: qa)",
    ]


def test_an_empty_config_file_says_it_is_empty(tmp_path: Path) -> None:
    config = tmp_path / "agility.yaml"
    config.write_text("# nothing yet\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(config)])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {config}: the config file is empty (start from the example in the README, 'The project config')\n")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_semicolon_or_tab_separated_csv_is_read_by_its_delimiter(tracking: str, tmp_path: Path, delimiter: str) -> None:
    experiment = f"delimiter-{uuid.uuid4().hex[:8]}"
    config = write_project(tmp_path, metrics=["exact_match"], experiment=experiment)
    columns = ["sample_id", "question", "context", "answer_ground_truth", "answer_source_llm"]
    lines = [delimiter.join(columns)] + [delimiter.join(row[c] for c in columns) for row in GOLDEN_ROWS]
    (tmp_path / "golden.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")  # "$1,577.0 million" has a comma
    result = CliRunner().invoke(main, ["run", str(config), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.stderr
    (run,) = _experiment_runs(tracking, experiment)
    assert run.data.tags["agility.role"] == "source" and run.info.status == "FINISHED"
    assert run.data.metrics["n_samples"] == 3 and run.data.metrics["exact_match"] == pytest.approx(1 / 3)  # "Yes" == "Yes"
    table = MlflowClient(tracking).load_table(run.info.experiment_id, "eval_results.json", run_ids=[run.info.run_id])
    assert list(table["output"]) == [row["answer_source_llm"] for row in GOLDEN_ROWS]


def test_a_row_that_does_not_fit_a_one_column_header_names_the_delimiter(tmp_path: Path) -> None:
    config = write_project(tmp_path)
    (tmp_path / "golden.csv").write_text("sample_id\nq1;Revenue, in FY2023?\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(config)])
    expected = ("error: golden.csv, row 1: 2 fields where the header has 1 (the header is one column; are the columns separated by ';'? "
                "use commas)\n")
    assert (result.exit_code, result.stderr) == (2, expected)
