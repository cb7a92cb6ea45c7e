"""Recorded outputs of any model (``provider: replay``): from golden-file columns or a file joined on ``sample_id``.

A team migrating an application often has several models' answers on the same questions already, with
latency and tokens. Each becomes a normal candidate run without a single call; compare decides them like
any other. Everything is checked before the first run: the columns exist, the numbers are numbers, and a
file's ids match the golden dataset's both ways.

Example:
    >>> import pathlib, tempfile
    >>> from agility_mlflow.config import ModelConfig
    >>> from agility_mlflow.dataset import load_dataset
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "golden.csv").write_text("sample_id,question\\nq1,2+2?\\nq2,3+3?\\n")
    >>> _ = (d / "claude.csv").write_text("id,answer,seconds\\nq1,4,0.8\\nq2,6,1.1\\n")
    >>> model = ModelConfig(provider="replay", model_id="claude-3-5-sonnet", path="claude.csv",
    ...                     columns={"sample_id": "id", "output": "answer", "latency": "seconds"})
    >>> columns, table = recorded_outputs("claude", model, load_dataset(d / "golden.csv"), d)
    >>> table["q2"]["answer"], table["q2"]["seconds"]
    ('6', 1.1)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agility_mlflow.backends.replay import ReplayColumns
from agility_mlflow.config import ModelConfig
from agility_mlflow.dataset import SAMPLE_ID, GoldenDataset, load_dataset
from agility_mlflow.errors import InputError

_SHOWN_IDS = 5


def replay_columns(model: ModelConfig) -> ReplayColumns:
    """The columns a replayed model's outputs are read from (the source's by default)."""
    if model.columns is None:
        return ReplayColumns()
    c = model.columns
    return ReplayColumns(c.output, c.latency, c.ttft, c.input_tokens, c.output_tokens)


def recorded_outputs(
    name: str, model: ModelConfig, dataset: GoldenDataset, base_dir: Path
) -> tuple[ReplayColumns, dict[str, Mapping[str, Any]] | None]:
    """Check a replayed model's recorded outputs; return its columns and, for a ``path:`` file, its rows by id.

    Args:
        name: The candidate (or ``source``) the outputs belong to, for messages.
        model: A ``provider: replay`` model config.
        dataset: The whole golden dataset (not a ``--limit`` head: ids are matched both ways).
        base_dir: The config's folder, which ``path`` is relative to.

    Raises:
        InputError: A missing file or column, a value that is not a number, or ids present on one side only.
    """
    columns = replay_columns(model)
    kinds = {columns.latency: float, columns.ttft: float, columns.input_tokens: int, columns.output_tokens: int}
    # The source's own columns are numbers already (the dataset converts them, a gap is "not measured");
    # columns named in ``columns:`` are checked and converted here, a gap included.
    numbers: dict[str, type] = {column: kind for column, kind in kinds.items() if column} if model.columns is not None else {}
    why = f"the replayed model '{name}'"
    if model.path is None:
        dataset.require([columns.output], why)
        dataset.require_numbers(numbers, why)
        return columns, None
    path = (base_dir / model.path).resolve()
    if not path.is_file():
        raise InputError(f"{why}: recorded outputs file not found: {path}")
    id_column = model.columns.sample_id if model.columns else SAMPLE_ID
    recorded = load_dataset(path, {SAMPLE_ID: id_column} if id_column != SAMPLE_ID else None)
    recorded.require([columns.output], why)
    recorded.require_numbers(numbers, why)
    table: dict[str, Mapping[str, Any]] = {str(row[SAMPLE_ID]): row for row in recorded.rows}
    golden_ids = [str(row[SAMPLE_ID]) for row in dataset.rows]
    missing = [i for i in golden_ids if i not in table]
    if missing:
        raise InputError(f"{path.name}: no recorded output of {why} for {_ids(missing)} of {dataset.path.name} (joined on {id_column})")
    known = set(golden_ids)
    unknown = [i for i in table if i not in known]
    if unknown:
        raise InputError(f"{path.name}: {_ids(unknown)} of {why} not in {dataset.path.name} (joined on {id_column})")
    return columns, table


def _ids(ids: list[str]) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:_SHOWN_IDS])
    more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
    return f"sample_id {shown}{more}" if len(ids) == 1 else f"sample_ids {shown}{more}"
