"""Finding the runs to compare: server-side filters and ordering, page by page.

Run-level metrics come with the search; the per-sample ``eval_results.json`` is downloaded only for
the runs actually decided, so an experiment with thousands of trials stays cheap to compare.

Example:
    >>> source = latest_source_run(experiment_id)  # doctest: +SKIP
    >>> top = candidate_runs(experiment_id, order_metric="token_f1", limit=10)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from agility_mlflow import tracking
from agility_mlflow.compare._runs import RunRecord
from agility_mlflow.vocabulary import OPTIMIZATION, RESULTS_ARTIFACT, SAMPLE_ID

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
_DOWNLOAD_WORKERS = 8


def iter_runs(
    experiment_ids: Sequence[str],
    *,
    filter_string: str = "",
    order_by: Sequence[str] | None = None,
    limit: int | None = None,
    page_size: int = PAGE_SIZE,
    client: MlflowClient | None = None,
) -> Iterator[Run]:
    """Active runs matching ``filter_string`` in ``order_by`` order, fetched ``page_size`` at a time.

    Filtering and ordering happen on the tracking server; only ``limit`` runs (default: all) are
    transferred.
    """
    client = client or MlflowClient()
    token = None
    remaining = limit
    while remaining is None or remaining > 0:
        size = page_size if remaining is None else min(page_size, remaining)
        page = client.search_runs(
            list(experiment_ids),
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=size,
            order_by=list(order_by or []),
            page_token=token,
        )
        yield from page
        if remaining is not None:
            remaining -= len(page)
        token = page.token
        if not token or not page:
            return


def finished_with_role(role: str) -> str:
    """The filter string for FINISHED runs tagged ``agility.role = role``.

    Example:
        >>> finished_with_role("trial")
        "tags.`agility.role` = 'trial' and attributes.status = 'FINISHED'"
    """
    return f"tags.`{tracking.ROLE}` = '{role}' and attributes.status = 'FINISHED'"


def latest_source_run(experiment_id: str, *, client: MlflowClient | None = None) -> RunRecord | None:
    """The most recently started FINISHED run tagged ``agility.role = source``, or ``None``."""
    runs = list(iter_runs([experiment_id], filter_string=finished_with_role("source"), order_by=["attributes.start_time DESC"], limit=1, client=client))
    return to_record(runs[0]) if runs else None


def candidate_runs(
    experiment_id: str,
    *,
    roles: Sequence[str] = ("candidate", "trial"),
    order_metric: str | None = None,
    higher_is_better: bool = True,
    limit: int | None = None,
    page_size: int = PAGE_SIZE,
    client: MlflowClient | None = None,
) -> list[RunRecord]:
    """FINISHED runs with one of ``roles``, best first by ``order_metric`` (server-side), else newest first.

    Runs without ``order_metric`` come last. MLflow filters join with AND only, so each role is one
    server-side query; with ``limit`` each query returns at most ``limit`` runs and the merged
    list keeps the best ``limit``.

    Args:
        experiment_id: The experiment to search.
        roles: ``agility.role`` values to include.
        order_metric: Metric to order by; ``None``: newest first.
        higher_is_better: Order ``order_metric`` descending (else ascending).
        limit: Return at most this many runs (a top-k); ``None``: every matching run.
        page_size: Runs per request.
        client: An ``MlflowClient``; default one for the current tracking URI.
    """
    order_by = ["attributes.start_time DESC"]
    if order_metric:
        order_by.insert(0, f"metrics.`{order_metric}` {'DESC' if higher_is_better else 'ASC'}")
    records = [
        to_record(run)
        for role in dict.fromkeys(roles)
        for run in iter_runs([experiment_id], filter_string=finished_with_role(role), order_by=order_by, limit=limit, page_size=page_size, client=client)
    ]
    if len(set(roles)) > 1:
        records.sort(key=lambda r: _order_key(r, order_metric, higher_is_better))
    return records[:limit] if limit is not None else records


def _order_key(record: RunRecord, metric: str | None, higher_is_better: bool) -> tuple[Any, ...]:
    value = record.metrics.get(metric) if metric else None
    if metric is None:
        return (0, 0.0, -record.start_time)
    if value is None:
        return (1, 0.0, -record.start_time)
    return (0, -value if higher_is_better else value, -record.start_time)


def to_record(run: Run) -> RunRecord:
    tags = run.data.tags
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id,
        role=tags.get(tracking.ROLE, ""),
        candidate=tags.get(tracking.CANDIDATE),
        prompt=tags.get(tracking.PROMPT),
        start_time=run.info.start_time or 0,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        optimization=tags.get(OPTIMIZATION),
    )


def load_results(runs: Sequence[RunRecord], *, client: MlflowClient | None = None) -> list[RunRecord]:
    """The runs with their ``eval_results.json`` rows, downloaded in parallel.

    A run whose table is missing or unreadable comes back with ``rows`` still ``None`` (and a warning).
    """
    client = client or MlflowClient()
    with tracking.quiet_artifact_downloads(), tempfile.TemporaryDirectory(prefix="agility-compare-") as scratch:

        def load(run: RunRecord) -> RunRecord:
            rows = _read_results(client, run.run_id, Path(scratch) / run.run_id)
            return run if rows is None else run.with_rows(rows)

        with ThreadPoolExecutor(max_workers=min(_DOWNLOAD_WORKERS, max(1, len(runs)))) as pool:
            return list(pool.map(load, runs))


def read_results(run_id: str, *, client: MlflowClient | None = None, artifact: str = RESULTS_ARTIFACT) -> list[dict[str, Any]] | None:
    """One run's ``eval_results.json`` rows (or another per-sample table, e.g. ``analysis.json``); ``None``
    (and a warning) when it is missing or unreadable."""
    with tracking.quiet_artifact_downloads(), tempfile.TemporaryDirectory(prefix="agility-results-") as scratch:
        return _read_results(client or MlflowClient(), run_id, Path(scratch), artifact)


def _read_results(client: MlflowClient, run_id: str, directory: Path, artifact: str = RESULTS_ARTIFACT) -> list[dict[str, Any]] | None:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        rows = tracking.read_table(run_id, artifact, directory=directory, client=client)
    except (MlflowException, OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("run %s: cannot read %s (%s)", run_id, artifact, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    if rows and SAMPLE_ID not in rows[0]:
        logger.warning("run %s: %s has no sample_id column", run_id, artifact)
        return None
    return rows

