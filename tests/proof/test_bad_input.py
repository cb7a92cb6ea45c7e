"""Bad input: one clear line naming the file, row, column or key; exit code 2; no run started.

Every item of the issue's list has a case here with its exact message: datasets (missing columns,
empty, duplicate ids, bytes that are not UTF-8, NaN ground truth, a 10 MB cell, 100k rows streamed),
configs (unknown keys, wrong types, missing files, unknown provider or metric), templates (unknown or
unbalanced placeholders) and CLI arguments. Every case runs the real command line in-process (click's
runner: the same code path as the ``agility`` script without a new interpreter per case).
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from agility_mlflow.cli import main
from agility_mlflow.dataset import load_dataset
from agility_mlflow.evaluation import prepare
from tests.helpers import GOLDEN_ROWS, is_new_store, run_cli, write_csv, write_project

COLUMNS = ("answer_ground_truth, answer_source_llm, context, input_token_source_llm, latency_source_llm, "
           "output_token_source_llm, question, sample_id, ttft_source_llm")
MALFORMED = "(use {{variable}} with a letter or _ first)"

# A case builds a project under tmp_path and returns the CLI arguments.
Build = Callable[[Path], list[str]]


def _rows(**edits: str) -> list[dict]:
    """The golden rows with ``edits`` applied to the second row."""
    return [dict(GOLDEN_ROWS[0]), {**GOLDEN_ROWS[1], **edits}, dict(GOLDEN_ROWS[2])]


def _without(column: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k != column} for row in GOLDEN_ROWS]


def _run(rows: list[dict] | None = None, **overrides: object) -> Build:
    """`agility run` on a project with ``rows`` and config ``overrides``."""
    return lambda tmp_path: ["run", str(write_project(tmp_path, rows=rows or GOLDEN_ROWS, **overrides))]


def _raw_dataset(name: str, content: bytes) -> Build:
    """`agility run` on a dataset file holding exactly ``content``."""
    def build(tmp_path: Path) -> list[str]:
        config = write_project(tmp_path, dataset={"path": name})
        (tmp_path / name).write_bytes(content)
        return ["run", str(config)]
    return build


def _config_text(text: str) -> Build:
    """`agility run` on a config file holding exactly ``text``."""
    def build(tmp_path: Path) -> list[str]:
        config = write_project(tmp_path)
        config.write_text(text, encoding="utf-8")
        return ["run", str(config)]
    return build


# A validation pass reports every problem: these small datasets also lack what the project's prompt, metrics and source need.
LACKS_ANSWERS = ("error: golden.csv: missing column 'answer_ground_truth' (needed by metric 'exact_match')\n"
                 "error: golden.csv: missing column 'answer_source_llm' (needed by the replayed model 'source')")
LACKS_CONTEXT = "error: prompt 'qa' (inline): placeholder '{{context}}' has no column in golden.jsonl (columns: question, sample_id)\n"
NON_UTF8 = b"sample_id,question,context\nq1,ok,fine\nq2,caf\xe9 prices?,fine\n"
# Expected stderr, with {config} and {dir} standing for the config file and its folder.
CASES: dict[str, tuple[Build, str]] = {
    # Datasets
    "dataset: missing id column": (
        _run(_without("sample_id")),
        "error: golden.csv: missing column 'sample_id' (map another column with dataset.columns: {sample_id: YOUR_ID_COLUMN})"),
    "dataset: missing renamed column": (
        _run(dataset={"path": "golden.csv", "columns": {"sample_id": "financebench_id"}}),
        "error: golden.csv: missing column 'financebench_id' (mapped to 'sample_id' by dataset.columns)"),
    "dataset: missing column a metric needs": (
        _run(_without("answer_ground_truth")),
        "error: golden.csv: missing column 'answer_ground_truth' (needed by metric 'exact_match')"),
    "dataset: empty file": (_raw_dataset("golden.csv", b""), "error: golden.csv: the dataset is empty"),
    "dataset: header only": (_raw_dataset("golden.csv", b"sample_id,question\n"), "error: golden.csv: the dataset has no rows"),
    "dataset: duplicate id": (
        _run(_rows(sample_id="q1")), "error: golden.csv, row 2, column 'sample_id': duplicate value 'q1' (first at row 1)"),
    "dataset: missing id": (_run(_rows(sample_id=" ")), "error: golden.csv, row 2, column 'sample_id': missing sample id"),
    "dataset: bytes that are not UTF-8": (
        _raw_dataset("golden.csv", NON_UTF8),
        "error: golden.csv, row 2, column 'question': bytes that are not UTF-8 (line 3, byte 44: b'\\xe9')\n" + LACKS_ANSWERS),
    "dataset: NaN ground truth": (
        _run(_rows(answer_ground_truth="NaN")),
        "error: golden.csv, row 2 (sample_id 'q2'), column 'answer_ground_truth': missing value (needed by metric 'exact_match')"),
    "dataset: not a number": (
        _run(_rows(latency_source_llm="fast")), "error: golden.csv, row 2, column 'latency_source_llm': expected a number, got 'fast'"),
    "dataset: negative tokens": (
        _run(_rows(output_token_source_llm="-3")),
        "error: golden.csv, row 2, column 'output_token_source_llm': expected a non-negative number, got '-3'"),
    "dataset: ragged row": (
        _raw_dataset("golden.csv", b"sample_id,question\nq1,a,b\n"), "error: golden.csv, row 1: 3 fields where the header has 2"),
    "dataset: duplicate header": (
        _raw_dataset("golden.csv", b"sample_id,question,question\nq1,a,b\n"), "error: golden.csv: duplicate column 'question' in the header"),
    "dataset: invalid JSON line": (
        _raw_dataset("golden.jsonl", b'{"sample_id": "q1", "question": "a"}\n{"sample_id": \n'),
        "error: golden.jsonl, line 2: invalid JSON (Expecting value)\n" + LACKS_CONTEXT + LACKS_ANSWERS.replace(".csv", ".jsonl")),
    "dataset: JSON lines with other keys": (
        _raw_dataset("golden.jsonl", b'{"sample_id": "q1", "question": "a"}\n{"sample_id": "q2"}\n'),
        "error: golden.jsonl, line 2: keys differ from line 1 (missing ['question'])\n" + LACKS_CONTEXT
        + LACKS_ANSWERS.replace(".csv", ".jsonl")),
    "dataset: damaged parquet": (
        _raw_dataset("golden.parquet", b"PAR1 not really"),
        "error: golden.parquet: cannot read parquet (Parquet magic bytes not found in footer. Either the file is corrupted "
        "or this is not a parquet file.)"),
    "dataset: unsupported format": (
        _raw_dataset("golden.xlsx", b"PK"), "error: golden.xlsx: unsupported dataset format '.xlsx' (expected .csv, .jsonl or .parquet)"),
    # Configs
    "config: unknown key": (_run(experimnet="typo"), "error: {config}: unknown key 'experimnet'"),
    "config: unknown nested key": (
        _run(run={"concurency": 4}), "error: {config}: unknown key 'run.concurency'"),
    "config: wrong type": (
        _run(run={"concurrency": "many"}),
        "error: {config}: key 'run.concurrency': Input should be a valid integer, unable to parse string as an integer"),
    "config: missing key": (_config_text("experiment: x\n"), "error: {config}: missing key 'dataset'\nerror: {config}: missing key 'prompts'"),
    "config: not a mapping": (_config_text("- a\n- b\n"), "error: {config}: expected a mapping of config keys, got list"),
    "config: invalid YAML": (
        _config_text("experiment: x\ndataset: {path: [\n"),
        "error: {config}, line 3: invalid YAML (expected the node content, but found '<stream end>')"),
    "config: missing dataset file": (
        _run(dataset={"path": "nope.csv"}), "error: {config}: key 'dataset.path': file not found: {dir}/nope.csv"),
    "config: missing template file": (
        _run(prompts=[{"name": "qa", "template": "prompts/nope.txt"}]), "error: prompt 'qa': template file not found: {dir}/prompts/nope.txt"),
    "config: unknown provider": (
        _run(candidates=[{"name": "c", "provider": "vertex", "model_id": "m"}]),
        "error: {config}: key 'candidates[0].provider': unknown provider 'vertex' (expected one of: local, openai, bedrock, replay)"),
    "config: unknown prompt of a candidate": (
        _run(candidates=[{"name": "c", "provider": "local", "model_id": "m", "prompts": ["nope"]}]),
        "error: {config}: key 'candidates[0].prompts': unknown prompt 'nope' (known: qa)"),
    # Templates
    "template: unknown placeholder": (
        _run(prompts=[{"name": "qa", "template": "Q: {{ticker}} {{question}}"}]),
        "error: prompt 'qa' (inline): placeholder '{{ticker}}' has no column in golden.csv (columns: " + COLUMNS + ")"),
    "template: unknown placeholder in the system message": (
        _run(prompts=[{"name": "qa", "template": "Q: {{question}}", "system": "Expert on {{sector}}."}]),
        "error: prompt 'qa' (inline): placeholder '{{sector}}' has no column in golden.csv (columns: " + COLUMNS + ")"),
    "template: unbalanced, unclosed": (
        _run(prompts=[{"name": "qa", "template": "Q: {{question}"}]),
        "error: prompt 'qa' (inline), line 1: malformed placeholder near 'Q: {{question}' " + MALFORMED),
    "template: unbalanced, extra braces": (
        _run(prompts=[{"name": "qa", "template": "Q: {{question}}}}"}]),
        "error: prompt 'qa' (inline), line 1: malformed placeholder near 'question}}}}' " + MALFORMED),
    "template: placeholder that is not a name": (
        _run(prompts=[{"name": "qa", "template": "Q: {{ 1st }}"}]),
        "error: prompt 'qa' (inline), line 1: malformed placeholder near 'Q: {{ 1st }}' " + MALFORMED),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_exact_line_per_problem_and_exit_2(name: str, tmp_path: Path) -> None:
    build, expected = CASES[name]
    result = CliRunner().invoke(main, build(tmp_path))
    message = expected.replace("{config}", str(tmp_path / "agility.yaml")).replace("{dir}", str(tmp_path))
    assert (result.exit_code, result.stderr) == (2, message + "\n")
    assert is_new_store(Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")))  # nothing was logged


def test_unknown_metric_lists_the_known_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(write_project(tmp_path, metrics=["exact_match", "accuracy_score"]))])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown metric 'accuracy_score' (known: ") and result.stderr.endswith(")\n")
    assert "exact_match, " in result.stderr and result.stderr.count("\n") == 1


# click words these itself, a little differently from one release to the next: the part that names the problem.
CLI_CASES = {
    "missing argument": (["run"], "Missing argument 'CONFIG'"),
    "limit zero": (["run", "{config}", "--limit", "0"], "0 is not in the range x>=1"),
    "limit not a number": (["run", "{config}", "--limit", "abc"], "'abc' is not a valid integer"),
    "unknown option": (["run", "{config}", "--limt", "3"], "--limt"),
    "unknown command": (["evaluate", "{config}"], "No such command 'evaluate'"),
    "bad choice": (["migrate", "{config}", "--prompt", "qa", "--method", "magic", "--target-model", "m"], "'magic' is not one of"),
    "missing required option": (["check", "--dataset", "golden.csv"], "Missing option '--model'"),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_bad_arguments_exit_2_with_one_line(name: str, tmp_path: Path) -> None:
    """Argument parsing errors are one line, like every other bad input: the problem, then where help is."""
    args, expected = CLI_CASES[name]
    config = write_project(tmp_path)
    result = CliRunner().invoke(main, [a.format(config=config) for a in args])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line and line.endswith(" --help')"), line


AGILITY_ERRORS = {
    "unknown candidate": (["run", "{config}", "--candidate", "gpt-5"], "error: agility.yaml: --candidate 'gpt-5' is not a candidate (known: local)"),
    "sweep without a sweep section": (["sweep", "{config}"], "error: agility.yaml: no 'sweep:' section to run"),
    "unknown prompt to migrate": (["migrate", "{config}", "--prompt", "nope", "--method", "bedrock", "--target-model", "m"],
                                  "error: agility.yaml: --prompt 'nope' is not a prompt (known: qa)"),
    "model URI": (["check", "--model", "app.qa", "--dataset", "golden.csv"],
                  "error: --model 'app.qa': use models:/NAME@ALIAS or models:/NAME/VERSION"),
    "threshold syntax": (["check", "--model", "models:/app.qa@champion", "--dataset", "golden.csv", "--min", "token_f1>0.3"],
                         "error: --min 'token_f1>0.3': use METRIC=VALUE, e.g. token_f1=0.4"),
    "model name": (["register", "{config}", "--name", "app qa"], "error: --name 'app qa': use letters, digits, '.', '_' and '-' (e.g. app.qa)"),
    "review pair": (["review", "export", "0123", "--output", "r.csv", "--disagree", "token_f1"],
                    "error: --disagree 'token_f1': give two score columns as A,B"),
}


@pytest.mark.parametrize("name", list(AGILITY_ERRORS))
def test_bad_argument_values_are_one_line(name: str, tmp_path: Path) -> None:
    args, expected = AGILITY_ERRORS[name]
    config = write_project(tmp_path, candidates=[{"name": "local", "provider": "local", "model_id": "smollm2-135m-instruct"}])
    result = CliRunner().invoke(main, [a.format(config=config) for a in args])
    assert (result.exit_code, result.stderr) == (2, expected + "\n")


def test_missing_api_key_names_the_candidate(tmp_path: Path) -> None:
    candidate = {"name": "gpt", "provider": "openai", "model_id": "gpt-4o-mini", "api_key_env": "AGILITY_NO_SUCH_KEY"}
    config = write_project(tmp_path, candidates=[candidate])
    result = run_cli("run", str(config), env={"OPENAI_BASE_URL": ""})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: agility.yaml: candidate 'gpt': no API key for OpenAI model 'gpt-4o-mini': set AGILITY_NO_SUCH_KEY or base_url"
    )


def test_dataset_given_as_a_directory(tmp_path: Path) -> None:
    (tmp_path / "data.csv").mkdir()
    config = write_project(tmp_path, dataset={"path": "data.csv"})
    result = CliRunner().invoke(main, ["run", str(config)])
    assert (result.exit_code, result.stderr) == (2, f"error: {config}: key 'dataset.path': file not found: {tmp_path / 'data.csv'}\n")


def test_a_10_mb_cell_is_data(tmp_path: Path) -> None:
    big = "Revenue | 1,577.0\n" * (10 * 1024 * 1024 // 18)
    rows = [{**GOLDEN_ROWS[0], "context": big}, GOLDEN_ROWS[1]]
    config = write_project(tmp_path, rows=rows)
    project = prepare(config)
    assert len(project.dataset.rows[0]["context"]) == len(big) > 10_000_000
    messages = project.configurations[0].template.render(project.dataset.rows[0])
    assert big in messages[-1]["content"]


# 100k rows: validated in one streamed pass, a bad row named by its number, memory bounded.

N_BIG = 100_000


def _write_big(path: Path, duplicate_at: int | None = None) -> Path:
    """``N_BIG`` golden rows (about 12 MB as CSV); row ``duplicate_at`` repeats the id of row 8."""
    rows = []
    for i in range(1, N_BIG + 1):
        base = GOLDEN_ROWS[i % 3]
        rows.append({**base, "sample_id": "s000008" if i == duplicate_at else f"s{i:06d}", "question": f"{base['question']} #{i}"})
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path
    return write_csv(path, rows)


def test_a_bad_row_deep_in_100k_rows_is_named_exactly(tmp_path: Path) -> None:
    config = write_project(tmp_path, rows=[GOLDEN_ROWS[0]])  # the config; the dataset is rewritten below
    _write_big(tmp_path / "golden.csv", duplicate_at=99_999)
    result = run_cli("run", str(config), "--limit", "5")  # --limit never skips validating the rest
    assert result.returncode == 2
    assert result.stderr == "error: golden.csv, row 99999, column 'sample_id': duplicate value 's000008' (first at row 8)\n"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_100k_rows_are_validated_streaming_in_bounded_memory(tmp_path: Path, suffix: str) -> None:
    """Validation reads every row but keeps only the ids; ``head`` reads only the rows it keeps."""
    path = _write_big(tmp_path / f"golden{suffix}")
    tracemalloc.start()
    try:
        head = load_dataset(path).head(5)
        assert [r["sample_id"] for r in head.rows] == [f"s{i:06d}" for i in range(1, 6)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # About 130 bytes a row for the ids; reading the file at once held over 1,500 a row (150 MB).
    assert peak < 200 * N_BIG, peak


def test_100k_rows_with_limit_evaluate_only_the_limit(tmp_path: Path) -> None:
    config = write_project(tmp_path, rows=[GOLDEN_ROWS[0]])
    _write_big(tmp_path / "golden.csv")
    result = run_cli("run", str(config), "--limit", "5")
    assert result.returncode == 0, result.stderr
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("test-migration").experiment_id])
    assert run.data.metrics["n_samples"] == 5
    assert run.data.params["dataset_digest"] == load_dataset(tmp_path / "golden.csv").digest  # the whole file's digest
