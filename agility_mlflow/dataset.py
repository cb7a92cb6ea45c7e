"""The golden dataset: loading, column renames and validation before any model call.

Columns follow the AWS Model Agility method's names (``sample_id``, ``question``, ``context``,
``answer_ground_truth``, ``answer_source_llm``, ``latency_source_llm``, ...). Any other column is a
template variable. Every problem is reported as one line naming the file, row and column, where
``row N`` counts data records from 1 (the header is not a row); one pass reports every problem it finds
(see :class:`~agility_mlflow.errors.Problems`), so a file is fixed in one go.

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
import codecs
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from agility_mlflow.errors import InputError, Problems

logger = logging.getLogger(__name__)

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
_MISSING_TEXT = {"", "nan", "null", "none"}
_CHUNK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 4096
# Bytes that are not UTF-8, as Python's surrogateescape error handler decodes them.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# Delimiters a CSV exported by a spreadsheet in another locale uses instead of the comma.
_OTHER_DELIMITERS = {";": "';'", "\t": "a tab"}
# Where a row's problem goes: ``None`` raises it at once.
Report = Callable[[str], None] | None


class GoldenDataset:
    """Validated rows keyed by the golden column names.

    Text cells are ``str`` or ``None`` (missing); the numeric source columns are ``int``/``float``
    or ``None``. :func:`load_dataset` validates the whole file in one streamed pass and keeps no
    rows; they are read again when first used, and :meth:`head` reads only the rows it keeps, so
    ``--limit 5`` on a 100k-row file never holds more than 5 rows.

    Args:
        path: The file.
        rows: The rows, or None to read them from ``path`` on first use.
        columns: Golden column names, in file order.
        digest: Content digest of the file and the renames.
        renames: ``{golden_name: file_column}``.
        limit: With ``rows=None``: read at most this many rows.
        subset_digest: For :meth:`subset`: a digest of the sample ids it keeps (``digest`` stays the file's).
        lenient: Rows whose problems were already reported are read as ``None`` instead of raising
            (the file's problems are being collected, see :func:`load_dataset`).
    """

    def __init__(
        self,
        path: Path,
        rows: list[dict[str, Any]] | None,
        columns: list[str],
        digest: str,
        renames: Mapping[str, str] | None = None,
        *,
        limit: int | None = None,
        subset_digest: str | None = None,
        lenient: bool = False,
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.digest = digest
        self.subset_digest = subset_digest
        self.renames = dict(renames or {})
        self._rows = rows
        self._limit = limit
        self._lenient = lenient
        self._lock = threading.Lock()  # sweep workers may ask for the rows at once

    def __repr__(self) -> str:
        return f"GoldenDataset(path={str(self.path)!r}, columns={self.columns!r}, digest={self.digest!r})"

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows, read (and validated again) from the file on first use."""
        with self._lock:
            if self._rows is None:
                report: Report = (lambda message: None) if self._lenient else None
                rows = itertools.islice(_validated_rows(self.path, self.renames, report), self._limit)
                # Lenient: an unreadable record stays as None (already reported); _numbered_rows skips it.
                self._rows = cast("list[dict[str, Any]]", list(rows))
            return self._rows

    def head(self, n: int | None) -> GoldenDataset:
        """The first ``n`` rows (all when ``n`` is None); reads only those when the rows are not loaded yet."""
        if n is None:
            return self
        if self._rows is not None:
            return GoldenDataset(self.path, self._rows[:n], self.columns, self.digest, self.renames, lenient=self._lenient)
        limit = n if self._limit is None else min(n, self._limit)
        return GoldenDataset(self.path, None, self.columns, self.digest, self.renames, limit=limit, lenient=self._lenient)

    def subset(self, sample_ids: Iterable[str]) -> GoldenDataset:
        """The rows with these ``sample_id`` values, in file order.

        Its ``digest`` stays the file's: the rows are the same version of the golden set, so a run on
        the subset (an optimization's test split) pairs by sample id with a run on the whole file, and
        ``agility compare`` decides it on the samples both scored. ``subset_digest`` names the subset.

        Example:
            >>> ds = GoldenDataset(Path("g.csv"), [{"sample_id": "a"}, {"sample_id": "b"}], ["sample_id"], "d0")
            >>> part = ds.subset(["b"])
            >>> [row["sample_id"] for row in part.rows], part.digest, part.subset_digest != ds.subset(["a"]).subset_digest
            (['b'], 'd0', True)
        """
        wanted = {str(i) for i in sample_ids}
        rows = [row for row in self.rows if str(row[SAMPLE_ID]) in wanted]
        subset_digest = hashlib.sha256(json.dumps([self.digest, sorted(wanted)]).encode()).hexdigest()[:16]
        return GoldenDataset(self.path, rows, self.columns, self.digest, self.renames, subset_digest=subset_digest)

    def require(self, columns: Iterable[str], why: str) -> None:
        """Fail unless every row has a value in each of ``columns``; ``why`` says who needs them.

        Every missing column and value is reported at once.
        """
        problems = Problems()
        for column in columns:
            if column not in self.columns:
                problems.add(f"{self.path.name}: missing column '{self._file_name(column)}' (needed by {why})")
                continue
            for i, row in self._numbered_rows():
                if row.get(column) is None:
                    problems.add(
                        f"{self.path.name}, row {i} (sample_id '{row[SAMPLE_ID]}'), column '{self._file_name(column)}': "
                        f"missing value (needed by {why})"
                    )
        problems.raise_if_any()

    def require_numbers(self, columns: Mapping[str, type], why: str) -> None:
        """Like :meth:`require`, and each value must be a non-negative number: converted in place, as the source columns are."""
        self.require(list(columns), why)
        problems = Problems()
        for column, kind in columns.items():
            for i, row in self._numbered_rows():
                row[column] = _number(row[column], kind, f"{self.path.name}, row {i}, column '{self._file_name(column)}'", problems.add)
        problems.raise_if_any()

    def _numbered_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """The rows with their numbers in the file, leaving out records already reported as unreadable."""
        return ((i, row) for i, row in enumerate(self.rows, start=1) if row is not None)

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


def load_dataset(path: str | Path, columns: Mapping[str, str] | None = None, problems: Problems | None = None) -> GoldenDataset:
    """Load a ``.csv``, ``.jsonl`` or ``.parquet`` golden dataset and validate its ids and numbers.

    Validation streams over the file (CSV and JSONL a record at a time, parquet in batches), so a
    bad row deep in a large file is reported with its row number while memory stays bounded: only
    the sample ids are kept, to find duplicates. Every bad row is reported, not only the first.
    The rows are read when first used (see :class:`GoldenDataset`).

    Args:
        path: The file.
        columns: Renames ``{golden_name: file_column}``, e.g. ``{"sample_id": "financebench_id"}``.
        problems: Collect the rows' problems here (with the caller's own checks) instead of raising them.
    """
    path = Path(path)
    renames = dict(columns or {})
    digest = _digest(path, renames)
    found = Problems()
    rows = _validated_rows(path, renames, found.add)
    first = next((row for row in rows if row is not None), None)
    for _ in rows:  # every row is checked; none is kept
        pass
    if problems is None or first is None:
        found.raise_if_any()
    if first is None:
        raise InputError(f"{path.name}: the dataset has no rows")
    if problems is not None and found:
        problems.extend(InputError(found.messages, found.more))
    return GoldenDataset(path, None, list(first), digest, renames, lenient=bool(found))


def _validated_rows(path: Path, renames: Mapping[str, str], report: Report = None) -> Iterator[dict[str, Any] | None]:
    """The file's rows under golden column names, each checked as it is read (ids, numbers).

    A row's problem goes to ``report`` (by default it is raised); a record that cannot be read at
    all is then yielded as ``None``, so the rows after it keep their numbers.
    """
    report = report or _raise
    id_column = renames.get(SAMPLE_ID, SAMPLE_ID)
    to_golden: dict[str, str] | None = None
    seen: dict[str, int] = {}
    empty = True
    for i, record in _records(path, report):
        empty = False
        if record is None:
            yield None
            continue
        if to_golden is None:
            to_golden = _golden_names(path, list(record), renames)
        row = {to_golden.get(k, k): _clean(v) for k, v in record.items()}
        sample_id = row[SAMPLE_ID]
        if sample_id is None:
            report(f"{path.name}, row {i}, column '{id_column}': missing sample id")
        else:
            sample_id = row[SAMPLE_ID] = _id_text(sample_id)
            if sample_id in seen:
                report(f"{path.name}, row {i}, column '{id_column}': duplicate value '{sample_id}' (first at row {seen[sample_id]})")
            else:
                seen[sample_id] = i
        for column, kind in NUMERIC_COLUMNS.items():
            if column in row:
                row[column] = _number(row[column], kind, f"{path.name}, row {i}, column '{renames.get(column, column)}'", report)
        yield row
    if empty:
        raise InputError(f"{path.name}: the dataset has no rows")


def _raise(message: str) -> None:
    raise InputError(message)


def _golden_names(path: Path, file_columns: list[str], renames: Mapping[str, str]) -> dict[str, str]:
    """``{file_column: golden_name}`` after checking that every rename and ``sample_id`` has a column."""
    problems = Problems()
    for golden, source in renames.items():
        if source not in file_columns:
            problems.add(f"{path.name}: missing column '{source}' (mapped to '{golden}' by dataset.columns)")
    problems.raise_if_any()
    to_golden = {source: golden for golden, source in renames.items()}
    if SAMPLE_ID not in [to_golden.get(c, c) for c in file_columns]:
        hint = " (map another column with dataset.columns: {sample_id: YOUR_ID_COLUMN})"
        raise InputError(f"{path.name}: missing column 'sample_id'{hint}")
    return to_golden


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: dataset file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read dataset ({exc.strerror})") from None
    with handle:
        yield handle


def _digest(path: Path, renames: Mapping[str, str]) -> str:
    """SHA-256 of the file's bytes (read in chunks) and the renames, shortened."""
    digest = hashlib.sha256()
    with _open(path) as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    digest.update(json.dumps(dict(renames), sort_keys=True).encode())
    return digest.hexdigest()[:16]


# A numbered record: its row number and its values, or None when it could not be read (reported).
Numbered = tuple[int, dict[str, Any] | None]


def _records(path: Path, report: Callable[[str], None]) -> Iterator[Numbered]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_records(path, report)
    if suffix == ".jsonl":
        return _jsonl_records(path, report)
    if suffix == ".parquet":
        return _parquet_records(path)
    raise InputError(f"{path.name}: unsupported dataset format '{suffix}' (expected .csv, .jsonl or .parquet)")


def _csv_records(path: Path, report: Callable[[str], None]) -> Iterator[Numbered]:
    """One dict per CSV record, streamed.

    Bytes that are not UTF-8 are decoded as lone surrogates (``surrogateescape``) so the record
    holding them, and its column, can be named exactly; then the file is scanned for their offset.
    A header that is one column holding ``;`` or tabs is read with that delimiter (a spreadsheet's
    export in a locale whose decimal mark is the comma), and the log says so.
    """
    csv.field_size_limit(1 << 30)  # a long context cell is data, not an attack
    delimiter = _delimiter(path)
    with _open(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="") as text:
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = _csv_header(path, reader)
            row = 0
            for values in reader:
                if not values:
                    continue
                row += 1
                if _has_bad_bytes(values):
                    cell = _bad_cell(values)
                    column = f", column '{header[cell]}'" if cell < len(header) else ""
                    report(_bad_bytes_message(path, f"row {row}{column}"))
                    yield row, None
                elif len(values) != len(header):
                    report(f"{path.name}, row {row}: {len(values)} fields where the header has {len(header)}{_delimiter_hint(header, values)}")
                    yield row, None
                else:
                    yield row, dict(zip(header, values))
        except csv.Error as exc:
            raise InputError(f"{path.name}, line {reader.line_num}: malformed CSV ({exc})") from None


def _delimiter(path: Path) -> str:
    """``,`` unless the first line has no comma outside quotes but does have ``;`` or tabs."""
    with _open(path) as raw:
        first = raw.readline(_CHUNK_BYTES).decode("utf-8-sig", errors="replace")
    fields = next(csv.reader([first]), [])
    if len(fields) == 1:
        for delimiter, name in _OTHER_DELIMITERS.items():
            if delimiter in first:
                logger.info("%s: columns separated by %s (the header has no comma)", path.name, name)
                return delimiter
    return ","


def _delimiter_hint(header: list[str], values: list[str]) -> str:
    """Why a row may not match a one-column header: its fields are separated by something else."""
    if len(header) != 1:
        return ""
    joined = ",".join(values)
    found = [name for delimiter, name in _OTHER_DELIMITERS.items() if delimiter in joined]
    return f" (the header is one column; are the columns separated by {found[0]}? use commas)" if found else ""


def _csv_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    """The first record with any text; a file without one is empty."""
    for header in reader:
        if any(cell.strip() for cell in header):
            break
    else:
        raise InputError(f"{path.name}: the dataset is empty")
    if _has_bad_bytes(header):
        raise InputError(_bad_bytes_message(path, "header"))
    seen = set()
    for column in header:
        if not column.strip():
            raise InputError(f"{path.name}: empty column name in the header")
        if column in seen:
            raise InputError(f"{path.name}: duplicate column '{column}' in the header")
        seen.add(column)
    return header


def _has_bad_bytes(values: list[str]) -> bool:
    text = "".join(values)
    return not text.isascii() and _ESCAPED_BYTE.search(text) is not None


def _bad_cell(values: list[str]) -> int:
    return next(i for i, value in enumerate(values) if _ESCAPED_BYTE.search(value))


def _bad_bytes_message(path: Path, where: str) -> str:
    offset, line, byte = _first_bad_byte(path)
    return f"{path.name}, {where}: bytes that are not UTF-8 (line {line}, byte {offset}: {byte!r})"


def _first_bad_byte(path: Path) -> tuple[int, int, bytes]:
    """Offset, line number and value of the first byte that is not UTF-8, found by a chunked scan."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0
    with _open(path) as handle:
        while True:
            chunk = handle.read(_CHUNK_BYTES)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                pending = len(exc.object) - len(chunk)  # bytes of an unfinished character from the last chunk
                in_chunk = max(exc.start - pending, 0)
                line = newlines + chunk.count(b"\n", 0, in_chunk) + 1
                return offset - pending + exc.start, line, exc.object[exc.start:exc.start + 1]
            if not chunk:
                raise AssertionError(f"{path}: no byte that is not UTF-8")
            newlines += chunk.count(b"\n")
            offset += len(chunk)


def _jsonl_records(path: Path, report: Callable[[str], None]) -> Iterator[Numbered]:
    """One dict per JSON line, streamed; every line must have the first line's keys."""
    keys = None
    row = 0
    with _open(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row += 1
            problem = None
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                problem = f"bytes that are not UTF-8 (byte {exc.start} of the line)"
            except json.JSONDecodeError as exc:
                problem = f"invalid JSON ({exc.msg})"
            else:
                if not isinstance(record, dict):
                    problem = f"expected a JSON object, got {type(record).__name__}"
                elif keys is None:
                    keys = record.keys()
                elif record.keys() != keys:
                    missing = sorted(set(keys) - set(record))
                    extra = sorted(set(record) - set(keys))
                    problem = f"keys differ from line 1 ({f'missing {missing}' if missing else f'unexpected {extra}'})"
            if problem is not None:
                report(f"{path.name}, line {line_no}: {problem}")
                yield row, None
            else:
                yield row, record


def _parquet_records(path: Path) -> Iterator[Numbered]:
    """One dict per parquet row, read in record batches."""
    import pyarrow.parquet as pq

    with _open(path) as handle:
        try:
            batches = pq.ParquetFile(handle).iter_batches(batch_size=_PARQUET_BATCH_ROWS)
            row = 0
            for batch in batches:
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise InputError(f"{path.name}: cannot read parquet ({str(exc).splitlines()[0]})") from None


def _clean(value: Any) -> Any:
    """Missing cells (empty text, NaN, null) become None; text is kept as is."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value.strip().lower() in _MISSING_TEXT:
        return None
    return value


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _number(value: Any, kind: type, where: str, report: Report = None) -> int | float | None:
    """``value`` as a non-negative ``kind``; a problem goes to ``report`` (default: raised) and gives None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        (report or _raise)(f"{where}: expected a number, got {str(value)[:40]!r}")
        return None
    if math.isnan(number) or math.isinf(number) or number < 0:
        (report or _raise)(f"{where}: expected a non-negative number, got {str(value)[:40]!r}")
        return None
    return int(number) if kind is int else number
