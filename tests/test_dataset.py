"""Golden dataset loading and validation: every error names file, row and column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from agility_mlflow.dataset import load_dataset, references
from agility_mlflow.errors import InputError
from tests.helpers import GOLDEN_ROWS, write_csv


def test_csv_jsonl_parquet_load_the_same_rows(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "g.csv", GOLDEN_ROWS)
    jsonl_path = tmp_path / "g.jsonl"
    jsonl_path.write_text("\n".join(json.dumps(r) for r in GOLDEN_ROWS), encoding="utf-8")
    parquet_path = tmp_path / "g.parquet"
    pd.DataFrame(GOLDEN_ROWS).to_parquet(parquet_path)
    loaded = [load_dataset(p) for p in (csv_path, jsonl_path, parquet_path)]
    for ds in loaded:
        assert [r["sample_id"] for r in ds.rows] == ["q1", "q2", "q3"]
        assert ds.rows[0]["latency_source_llm"] == 1.2
        assert ds.rows[0]["input_token_source_llm"] == 120
        assert ds.rows[1]["context"] == "Net income FY2023: $212.5 million."


def test_financebench_style_file_with_renames_and_list_text(tmp_path: Path) -> None:
    path = tmp_path / "fb.csv"
    path.write_text(
        'financebench_id,question,ground_truths\nfinancebench_id_03029,"What is FY2018 capex?","[\'$1577.00\']"\n'
        "financebench_id_00499,Is it profitable?,\"['Yes', 'yes, it is']\"\n",
        encoding="utf-8",
    )
    ds = load_dataset(path, {"sample_id": "financebench_id", "answer_ground_truth": "ground_truths"})
    assert ds.rows[0]["sample_id"] == "financebench_id_03029"
    assert references(ds.rows[0]) == ["$1577.00"]
    assert references(ds.rows[1]) == ["Yes", "yes, it is"]


def test_list_text_is_never_evaluated_as_code(tmp_path: Path) -> None:
    row = {"answer_ground_truth": "[__import__('os').system('echo pwned')]"}
    assert references(row) == ["[__import__('os').system('echo pwned')]"]


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        load_dataset(path, **kwargs)
    return str(info.value)


def test_missing_sample_id_column(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("id,question\n1,a\n", encoding="utf-8")
    assert _error(path).startswith("g.csv: missing column 'sample_id'")


def test_missing_renamed_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "g.csv", GOLDEN_ROWS)
    message = _error(path, columns={"sample_id": "financebench_id"})
    assert message == "g.csv: missing column 'financebench_id' (mapped to 'sample_id' by dataset.columns)"


def test_duplicate_sample_id(tmp_path: Path) -> None:
    rows = [dict(GOLDEN_ROWS[0]), dict(GOLDEN_ROWS[1]), dict(GOLDEN_ROWS[0])]
    path = write_csv(tmp_path / "g.csv", rows)
    assert _error(path) == "g.csv, row 3, column 'sample_id': duplicate value 'q1' (first at row 1)"


def test_empty_sample_id(tmp_path: Path) -> None:
    rows = [dict(GOLDEN_ROWS[0]), {**GOLDEN_ROWS[1], "sample_id": ""}]
    path = write_csv(tmp_path / "g.csv", rows)
    assert _error(path) == "g.csv, row 2, column 'sample_id': missing sample id"


@pytest.mark.parametrize("content", ["", "   \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "g.csv"
    path.write_text(content, encoding="utf-8")
    assert _error(path) == "g.csv: the dataset is empty"


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("sample_id,question\n", encoding="utf-8")
    assert _error(path) == "g.csv: the dataset has no rows"


def test_non_utf8_bytes_name_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_bytes(b"sample_id,question,context\nq1,ok,fine\nq2,caf\xe9 prices?,fine\n")
    message = _error(path)
    assert message.startswith("g.csv, row 2, column 'question': bytes that are not UTF-8 (line 3")


def test_bad_number_in_source_latency(tmp_path: Path) -> None:
    rows = [dict(GOLDEN_ROWS[0]), {**GOLDEN_ROWS[1], "latency_source_llm": "fast"}]
    path = write_csv(tmp_path / "g.csv", rows)
    assert _error(path) == "g.csv, row 2, column 'latency_source_llm': expected a number, got 'fast'"


def test_missing_value_where_needed(tmp_path: Path) -> None:
    rows = [dict(GOLDEN_ROWS[0]), {**GOLDEN_ROWS[1], "answer_ground_truth": "NaN"}]
    ds = load_dataset(write_csv(tmp_path / "g.csv", rows))
    with pytest.raises(InputError) as info:
        ds.require(["answer_ground_truth"], "metric 'exact_match'")
    assert str(info.value) == (
        "g.csv, row 2 (sample_id 'q2'), column 'answer_ground_truth': missing value (needed by metric 'exact_match')"
    )


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "g.xlsx"
    path.write_bytes(b"x")
    assert _error(path) == "g.xlsx: unsupported dataset format '.xlsx' (expected .csv, .jsonl or .parquet)"


def test_jsonl_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text('{"sample_id": "a"}\n{"sample_id": \n', encoding="utf-8")
    assert _error(path).startswith("g.jsonl, line 2: invalid JSON")


def test_braces_in_cells_are_data(tmp_path: Path) -> None:
    rows = [{**GOLDEN_ROWS[0], "context": "template {{question}} and {curly}"}]
    ds = load_dataset(write_csv(tmp_path / "g.csv", rows))
    assert ds.rows[0]["context"] == "template {{question}} and {curly}"
