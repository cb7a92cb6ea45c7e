"""The providers' batch engines behind the runner: one job for all samples, resumed by job id after a kill.

A :class:`BatchBackend` answers whole batches, never one call: :func:`run_batch` writes the records,
submits one job, polls it (a progress bar of processed records), and reads each record's answer or
error back. The job id is persisted before anything else happens, in a :class:`JobStore` next to the
response cache and keyed by the batch's content (model, endpoint, parameters, every record's messages):
a run killed while its job runs finds the job again and waits for it, never submitting the same
records twice. Latency and time to first token are not measured in batch mode (``None``): the job's
wall time says nothing about one answer.

Example:
    >>> import tempfile
    >>> store = JobStore(tempfile.mkdtemp())
    >>> store.put("k1", {"job_id": "job-1"})
    >>> store.get("k1")["job_id"], store.get("k2")
    ('job-1', None)
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agility_mlflow.backends._base import Backend, Generation, Message
from agility_mlflow.errors import InputError, ProviderError, RetryableError
from agility_mlflow.progress import progress_bar

logger = logging.getLogger(__name__)
_MAX_STATUS_FAILURES = 10
_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class BatchLimits:
    """What one job may hold: the provider's quotas, checked before anything is uploaded."""

    min_records: int
    max_records: int
    max_input_bytes: int
    where: str
    """Where the numbers come from, for the error message."""


@dataclass(frozen=True)
class JobStatus:
    """A job's state as ``running``, ``completed`` (outputs to read, some records may have failed) or ``failed``."""

    state: str
    provider_status: str
    processed: int = 0
    total: int = 0
    message: str = ""


class BatchBackend(Backend):
    """A model answered through its provider's batch engine (``mode: batch``).

    Subclasses upload records, submit, report status and read results; :func:`run_batch` drives them.
    """

    limits: BatchLimits
    poll_s: float = 30.0

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        raise ProviderError(f"{self.model_id}: a mode: batch model answers whole batches, not single calls")

    @abc.abstractmethod
    def encode(self, record_id: str, messages: Sequence[Message], params: Mapping[str, Any]) -> dict[str, Any]:
        """One input record (a JSONL line) of the provider's batch format."""

    @abc.abstractmethod
    def submit(self, key: str, lines: bytes, pending: Mapping[str, Any]) -> dict[str, Any]:
        """Upload ``lines`` and create the job; returns what :meth:`status` and :meth:`results` need (``job_id`` at least).

        ``pending["token"]`` names the submission (a job name, an idempotency token): it is persisted before
        this is called and the same after a kill mid-submission, so a retry finds the job created then.
        """

    @abc.abstractmethod
    def status(self, job: Mapping[str, Any]) -> JobStatus: ...

    @abc.abstractmethod
    def results(self, job: Mapping[str, Any]) -> dict[str, Generation | str]:
        """Each record's answer, or its error message, by record id (records the job never answered are absent)."""


class JobStore:
    """Submitted jobs as ``<dir>/<key>.json``, written atomically; default ``<cache dir>/batch-jobs``."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        from agility_mlflow.cache import default_cache_dir

        self.directory = Path(directory) if directory is not None else default_cache_dir() / "batch-jobs"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def put(self, key: str, job: Mapping[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dict(job), handle)
        os.replace(tmp, self.directory / f"{key}.json")

    def delete(self, key: str) -> None:
        (self.directory / f"{key}.json").unlink(missing_ok=True)


def check_size(limits: BatchLimits, records: int, input_bytes: int | None = None) -> None:
    """An :class:`InputError` when ``records`` (or their ``input_bytes``) do not fit one job of a provider with ``limits``.

    Example:
        >>> check_size(BatchLimits(100, 50_000, 10**9, "the provider's quotas"), 12)
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.InputError: mode: batch needs at least 100 samples per job (the provider's quotas), got 12: use mode: on_demand for small sets
    """
    if records < limits.min_records:
        raise InputError(f"mode: batch needs at least {limits.min_records} samples per job ({limits.where}), got {records}: "
                         "use mode: on_demand for small sets")
    if records > limits.max_records:
        raise InputError(f"mode: batch takes at most {limits.max_records} samples per job ({limits.where}), got {records}: "
                         "use --limit or split the dataset")
    if input_bytes is not None and input_bytes > limits.max_input_bytes:
        raise InputError(f"mode: batch input is {input_bytes / 1e6:.1f} MB, over the {limits.max_input_bytes / 1e6:.0f} MB a job takes "
                         f"({limits.where})")


def record_id(index: int) -> str:
    """Record ids are positions: 11 alphanumerics, as Bedrock's examples use (``R0000000007``)."""
    return f"R{index:010d}"


def batch_key(backend: BatchBackend, params: Mapping[str, Any], conversations: Sequence[Sequence[Message]]) -> str:
    """The content address of one batch: the same records for the same model and endpoint give the same key."""
    material = json.dumps({"provider": backend.provider, "model": backend.model_id, "identity": backend.cache_identity(), "params": params,
                           "records": conversations}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def run_batch(
    backend: BatchBackend,
    params: Mapping[str, Any],
    conversations: Sequence[Sequence[Message]],
    store: JobStore,
    *,
    description: str = "",
    progress: bool | None = None,
) -> list[Generation | str]:
    """Each conversation's answer (or error message), in order, through one batch job of ``backend``.

    A job this batch already submitted (same :func:`batch_key`) is resumed, not submitted again. A job
    that fails as a whole raises :class:`ProviderError` and is forgotten, so the next run submits anew.
    """
    key = batch_key(backend, params, conversations)
    job = store.get(key)
    if job is not None and job.get("job_id"):
        logger.info("%s: resuming batch job %s (submitted %s)", description or backend.model_id, job["job_id"],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.get("submitted_at", 0))))
    else:
        lines = b"".join(json.dumps(backend.encode(record_id(i), messages, params), ensure_ascii=False).encode("utf-8") + b"\n"
                         for i, messages in enumerate(conversations))
        try:
            check_size(backend.limits, len(conversations), len(lines))
        except InputError as exc:
            raise InputError(f"{description or backend.model_id}: {exc}") from None
        # The name the job is submitted under, persisted first: a retry after a kill mid-submission finds the job by it.
        # New for each submission (a failed job's token would fetch that job again), the same on a retry of this one.
        token = (job or {}).get("token") or f"agility-{key[:24]}-{uuid.uuid4().hex[:12]}"
        pending = dict(job or {}, key=key, token=token, provider=backend.provider, model_id=backend.model_id, records=len(conversations))
        store.put(key, pending)  # before the job exists: a kill during submission leaves its name and token to find it by
        job = {**pending, **_once(backend.submit, key, lines, pending), "submitted_at": time.time()}
        store.put(key, job)
        logger.info("%s: submitted batch job %s with %d records", description or backend.model_id, job["job_id"], len(conversations))
    status = _wait(backend, job, len(conversations), description, progress)
    if status.state == "failed":
        store.delete(key)
        raise ProviderError(f"{backend.model_id}: batch job {job['job_id']} ended {status.provider_status}"
                            + (f": {status.message}" if status.message else ""))
    answers = _once(backend.results, job)
    missing = f"no output for this record (the job ended {status.provider_status})"
    store.delete(key)  # read: the answers now live in the response cache (when on) and the run
    return [answers.get(record_id(i), missing) for i in range(len(conversations))]


def _once(call: Any, *args: Any) -> Any:
    """A submission or a read, not retried here: a transient fault stops the run, and the next run resumes the job."""
    try:
        return call(*args)
    except RetryableError as exc:
        raise ProviderError(f"{exc}; re-run to resume the batch job") from exc


def _wait(backend: BatchBackend, job: Mapping[str, Any], total: int, description: str, progress: bool | None) -> JobStatus:
    """Poll until the job ends, showing processed records on a progress bar and each state change in the log."""
    bar = progress_bar(total, f"{description} (batch)".strip(), progress)
    shown, last, failures, logged, logged_at = 0, "", 0, -1, 0.0
    try:
        while True:
            try:
                status = backend.status(job)
                failures = 0
            except RetryableError as exc:  # a throttled or dropped status call: the job runs on; ask again
                failures += 1
                if failures >= _MAX_STATUS_FAILURES:
                    raise ProviderError(f"{backend.model_id}: batch job {job['job_id']}: status unavailable ({exc}); re-run to resume it") from exc
                time.sleep(backend.poll_s)
                continue
            if status.processed > shown:
                bar.update(min(status.processed, total) - shown)
                shown = min(status.processed, total)
            # A line per state change, and one a minute while records get done: a job may run for hours off a terminal.
            if status.provider_status != last or (status.processed != logged and time.monotonic() - logged_at >= _LOG_EVERY_S):
                last, logged, logged_at = status.provider_status, status.processed, time.monotonic()
                logger.info("batch job %s: %s, %d/%d records processed", job["job_id"], last, status.processed, status.total or total)
            if status.state != "running":
                return status
            time.sleep(backend.poll_s)
    finally:
        bar.close()
