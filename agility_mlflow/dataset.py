"""The golden dataset: loading, column renames and validation before any model call.

Columns follow the AWS Model Agility method's names (``sample_id``, ``question``, ``context``,
``answer_ground_truth``, ``answer_source_llm``, ``latency_source_llm``, ...). Any other column is a
template variable. Every problem is reported as one line naming the file, row and column, where
``row N`` counts data records from 1 (the header is not a row).

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "golden.csv"
    >>> _ = p.write_text("id,question,truth\\nq1,Revenue?,\\"['$1577.00']\\"\\n")
    >>> ds = load_dataset(p, columns={"sample_id": "id", "answer_ground_truth": "truth"})
    >>> ds.rows[0]["sample_id"], references(ds.rows[0])
    ('q1', ['$1577.00'])
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agility_mlflow.errors import InputError

SAMPLE_ID = "sample_id"
GROUND_TRUTH = "answer_ground_truth"
SOURCE_ANSWER = "answer_source_llm"
NUMERIC_COLUMNS = {
    "latency_source_llm": float,
    "ttft_source_llm": float,
    "input_token_source_llm": int,
    "output_token_source_llm": int,
    "llm_judge_score_source_llm": float,
    "human_score_source_llm": float,
}
GOLDEN_COLUMNS = frozenset(
    {SAMPLE_ID, "question", "context", GROUND_TRUTH, SOURCE_ANSWER, "human_score_reasoning_source_llm", *NUMERIC_COLUMNS}
)
_MISSING_TEXT = {"", "nan", "null", "none"}


@dataclass
class GoldenDataset:
    """Validated rows keyed by the golden column names.

    Text cells are ``str`` or ``None`` (missing); the numeric source columns are ``int``/``float``
    or ``None``.
    """

    path: Path
    rows: list[dict[str, Any]]
    columns: list[str]
    digest: str
    renames: dict[str, str] = field(default_factory=dict)

    def head(self, n: int | None) -> GoldenDataset:
        """The first ``n`` rows (all when ``n`` is None)."""
        if n is None:
            return self
        return GoldenDataset(self.path, self.rows[:n], self.columns, self.digest, self.renames)

    def require(self, columns: Iterable[str], why: str) -> None:
        """Fail unless every row has a value in each of ``columns``; ``why`` says who needs them."""
        for column in columns:
            if column not in self.columns:
                shown = self._file_name(column)
                raise InputError(f"{self.path.name}: missing column '{shown}' (needed by {why})")
            for i, row in enumerate(self.rows, start=1):
                if row.get(column) is None:
                    raise InputError(
                        f"{self.path.name}, row {i} (sample_id '{row[SAMPLE_ID]}'), column '{self._file_name(column)}': "
                        f"missing value (needed by {why})"
                    )

    def _file_name(self, column: str) -> str:
        return self.renames.get(column, column)


def references(row: Mapping[str, Any]) -> list[str]:
    """The acceptable ground-truth answers of a row.

    A list stored as text (``"['$1577.00', '$1.58 billion']"``) is parsed with
    :func:`ast.literal_eval`, which reads literals only and never runs code.
    """
    value = row.get(GROUND_TRUTH)
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return [text]
        if isinstance(parsed, list | tuple) and parsed and all(isinstance(v, str | int | float) for v in parsed):
            return [str(v) for v in parsed]
    return [text]


def load_dataset(path: str | Path, columns: Mapping[str, str] | None = None) -> GoldenDataset:
    """Load a ``.csv``, ``.jsonl`` or ``.parquet`` golden dataset and validate its ids and numbers.

    Args:
        path: The file.
        columns: Renames ``{golden_name: file_column}``, e.g. ``{"sample_id": "financebench_id"}``.
    """
    path = Path(path)
    renames = dict(columns or {})
    raw = _read_bytes(path)
    records = _parse(path, raw)
    if not records:
        raise InputError(f"{path.name}: the dataset has no rows")
    file_columns = list(records[0].keys())
    for golden, source in renames.items():
        if source not in file_columns:
            raise InputError(f"{path.name}: missing column '{source}' (mapped to '{golden}' by dataset.columns)")
    to_golden = {source: golden for golden, source in renames.items()}
    golden_columns = [to_golden.get(c, c) for c in file_columns]
    if SAMPLE_ID not in golden_columns:
        hint = " (map another column with dataset.columns: {sample_id: YOUR_ID_COLUMN})"
        raise InputError(f"{path.name}: missing column 'sample_id'{hint}")

    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, record in enumerate(records, start=1):
        row = {to_golden.get(k, k): _clean(v) for k, v in record.items()}
        sample_id = row[SAMPLE_ID]
        id_column = renames.get(SAMPLE_ID, SAMPLE_ID)
        if sample_id is None:
            raise InputError(f"{path.name}, row {i}, column '{id_column}': missing sample id")
        sample_id = row[SAMPLE_ID] = _id_text(sample_id)
        if sample_id in seen:
            raise InputError(
                f"{path.name}, row {i}, column '{id_column}': duplicate value '{sample_id}' (first at row {seen[sample_id]})"
            )
        seen[sample_id] = i
        for column, kind in NUMERIC_COLUMNS.items():
            if column in row:
                row[column] = _number(row[column], kind, f"{path.name}, row {i}, column '{renames.get(column, column)}'")
        rows.append(row)
    digest = hashlib.sha256(raw + json.dumps(renames, sort_keys=True).encode()).hexdigest()[:16]
    return GoldenDataset(path, rows, golden_columns, digest, renames)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: dataset file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read dataset ({exc.strerror})") from None


def _parse(path: Path, raw: bytes) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _parse_csv(path, raw)
    if suffix == ".jsonl":
        return _parse_jsonl(path, raw)
    if suffix == ".parquet":
        return _parse_parquet(path, raw)
    raise InputError(f"{path.name}: unsupported dataset format '{suffix}' (expected .csv, .jsonl or .parquet)")


def _parse_csv(path: Path, raw: bytes) -> list[dict[str, Any]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(_locate_bad_bytes(path, raw, exc.start)) from None
    if not text.strip():
        raise InputError(f"{path.name}: the dataset is empty")
    csv.field_size_limit(1 << 30)  # a long context cell is data, not an attack
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        _check_header(path, header)
        records = []
        for i, values in enumerate(reader, start=1):
            if not values:
                continue
            if len(values) != len(header):
                raise InputError(f"{path.name}, row {i}: {len(values)} fields where the header has {len(header)}")
            records.append(dict(zip(header, values)))
    except csv.Error as exc:
        raise InputError(f"{path.name}, line {reader.line_num}: malformed CSV ({exc})") from None
    return records


def _check_header(path: Path, header: list[str]) -> None:
    seen = set()
    for column in header:
        if not column.strip():
            raise InputError(f"{path.name}: empty column name in the header")
        if column in seen:
            raise InputError(f"{path.name}: duplicate column '{column}' in the header")
        seen.add(column)


def _locate_bad_bytes(path: Path, raw: bytes, offset: int) -> str:
    """Name the row and column holding the first byte that is not UTF-8."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    line = raw.count(b"\n", 0, offset) + 1
    head = raw[:line_start].decode("utf-8", errors="replace")
    header_line = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff")
    header = next(csv.reader([header_line]), [])
    rows_before = list(csv.reader(io.StringIO(head, newline="")))
    row = max(len(rows_before), 1)
    prefix = raw[line_start:offset].decode("utf-8", errors="replace")
    column_index = next(csv.reader([prefix]), [""]).__len__() - 1 if prefix else 0
    where = f"row {row}" if line > 1 else "header"
    column = f", column '{header[column_index]}'" if line > 1 and 0 <= column_index < len(header) else ""
    return f"{path.name}, {where}{column}: bytes that are not UTF-8 (line {line}, byte {offset}: {raw[offset:offset + 1]!r})"


def _parse_jsonl(path: Path, raw: bytes) -> list[dict[str, Any]]:
    records = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"{path.name}, line {line_no}: bytes that are not UTF-8 (byte {exc.start} of the line)") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path.name}, line {line_no}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path.name}, line {line_no}: expected a JSON object, got {type(record).__name__}")
        if records and record.keys() != records[0].keys():
            missing = sorted(set(records[0]) - set(record))
            extra = sorted(set(record) - set(records[0]))
            detail = f"missing {missing}" if missing else f"unexpected {extra}"
            raise InputError(f"{path.name}, line {line_no}: keys differ from line 1 ({detail})")
        records.append(record)
    return records


def _parse_parquet(path: Path, raw: bytes) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise InputError(f"{path.name}: cannot read parquet ({str(exc).splitlines()[0]})") from None
    return frame.to_dict(orient="records")


def _clean(value: Any) -> Any:
    """Missing cells (empty text, NaN, null) become None; text is kept as is."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value.strip().lower() in _MISSING_TEXT:
        return None
    if hasattr(value, "tolist"):  # numpy arrays and scalars from parquet
        return _clean(value.tolist())
    return value


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _number(value: Any, kind: type, where: str) -> int | float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a number, got {str(value)[:40]!r}") from None
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise InputError(f"{where}: expected a non-negative number, got {str(value)[:40]!r}")
    return int(number) if kind is int else number
