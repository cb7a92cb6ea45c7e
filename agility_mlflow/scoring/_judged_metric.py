"""Metrics a judge model scores: the custom ``llm_judge``, Ragas and DeepEval metrics.

They are registered by name like the string metrics, but scored after generation, sample by
sample in parallel, by :func:`judge_rows`. Each adds its score column to ``eval_results.json``, a
``<name>_reasoning`` column with the judge's reason and, when the judge failed on a sample, a
``<name>_error`` column; a failed sample is left out of the run's mean and counted in
``<name>_n_errors``, never scored 0.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agility_mlflow.errors import AgilityError, ProviderError
from agility_mlflow.scoring._scorer import JudgedScore, JudgeInput, Scorer

if TYPE_CHECKING:
    from agility_mlflow.scoring._judge_model import Judge, JudgeUsage

logger = logging.getLogger(__name__)


ScoreWithJudge = Callable[[JudgeInput, "Judge"], JudgedScore]


@dataclass(frozen=True)
class JudgedMetric:
    """A per-sample score that needs a judge model, built with the judge that scores it.

    Attributes:
        name: The MLflow metric name and results column.
        family: ``llm_judge``, ``ragas`` or ``deepeval`` (the extra to install for the latter two).
        fn: ``(JudgeInput, Judge) -> JudgedScore``.
        needs_reference: Samples without ``answer_ground_truth`` cannot be scored.
        needs_context: Samples without ``context`` cannot be scored.
        higher_is_better: Direction for comparisons and sweeps.
        scale: ``(low, high)`` of the score, for calibration and the report.
        judge: The judge that scores it; ``None`` only for a metric built to read its needs (``prepare`` does).
    """

    name: str
    family: str
    fn: ScoreWithJudge
    needs_reference: bool = False
    needs_context: bool = False
    higher_is_better: bool = True
    scale: tuple[float, float] = (0.0, 1.0)
    judge: Judge | None = field(default=None, compare=False, repr=False)

    @property
    def needs_judge(self) -> bool:
        return True

    def score(self, item: JudgeInput) -> JudgedScore:
        """The judge's score of one answered sample."""
        if self.judge is None:
            raise AgilityError(f"metric '{self.name}' was built without a judge: get_metric('{self.name}', judge=...)")
        return self.fn(item, self.judge)


def _columns(metric: Scorer) -> tuple[str, str, str]:
    return metric.name, f"{metric.name}_reasoning", f"{metric.name}_error"


JUDGE_COLUMNS = ("judge_calls", "judge_cached", "judge_input_tokens", "judge_output_tokens", "judge_cost_usd", "judge_malformed")


class RowJudge:
    """Scores rows with every judged metric in a pool of ``workers`` threads, reporting each row as it is done.

    :meth:`submit` hands over one row and returns at once; :meth:`completed` lists the rows judged
    since it was last asked (their scores, reasoning, errors and :data:`JUDGE_COLUMNS` all set);
    :meth:`finish` yields the rest as they are done, so a caller can log each row while others are judged.
    A judge that cannot be called at all (a :class:`ProviderError`) is raised by the next of
    either, as it fails the run; one sample's bad judgement is recorded in its row instead.

    Example:
        >>> rows = [{"answer": "4"}, {"answer": None}]
        >>> with RowJudge([get_metric("llm_judge", judge=judge)], workers=4) as judge:  # doctest: +SKIP
        ...     judge.submit(0, rows[0], JudgeInput("2+2?", "4"))
        ...     judge.submit(1, rows[1], None)  # a failed answer: no judge call
        ...     finished = sorted(judge.finish())
        >>> finished, rows[0]["llm_judge"] is not None, rows[1]["judge_calls"]  # doctest: +SKIP
        ([0, 1], True, None)
    """

    def __init__(self, metrics: Sequence[Scorer], *, workers: int = 4) -> None:
        for metric in metrics:
            if metric.needs_judge and metric.judge is None:
                raise AgilityError(f"metric '{metric.name}' was built without a judge: get_metric('{metric.name}', judge=...)")
        self._metrics = list(metrics)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="agility-judge")
        self._lock = threading.Lock()
        self._left: dict[int, int] = {}  # row index -> metrics still to score
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._futures: list[Future[None]] = []
        self._judged: list[dict[str, Any]] = []  # rows with an answer, for the run's error summary
        self._error: ProviderError | None = None

    def __enter__(self) -> RowJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, index: int, row: dict[str, Any], item: JudgeInput | None) -> None:
        """Judge ``row`` (sample ``index``) on ``item``; ``None`` for a failed answer: no judge call, no scores."""
        for metric in self._metrics:
            for column in _columns(metric):
                row.setdefault(column, None)
        if item is None:
            row.update(dict.fromkeys(JUDGE_COLUMNS))
            self._done.put(index)
            return
        self._judged.append(row)
        with self._lock:
            self._left[index] = len(self._metrics)
        usage = _new_usage()
        for metric in self._metrics:
            self._futures.append(self._pool.submit(self._score, index, row, item, metric, usage))

    def completed(self) -> list[int]:
        """The rows judged since the last call, without waiting."""
        if self._error is not None:
            raise self._error
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def finish(self) -> Iterator[int]:
        """Each row not yet reported by :meth:`completed`, as its judging ends; then the run's error summary."""
        for future in self._futures:
            future.result()
            yield from self.completed()
        yield from self.completed()
        for metric in self._metrics:
            errors = [row[f"{metric.name}_error"] for row in self._judged if row[f"{metric.name}_error"]]
            if errors:
                logger.warning("%s: %d sample(s) not scored; first: %s", metric.name, len(errors), errors[0])

    def close(self) -> None:
        """Stop judging: rows not started are dropped (the run failed, or everything is done)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _score(self, index: int, row: dict[str, Any], item: JudgeInput, metric: Scorer, usage: JudgeUsage) -> None:
        from agility_mlflow.scoring._judge_model import current_sample, current_usage

        value, reasoning, error = None, None, None
        if metric.needs_reference and not item.references:
            error = "no answer_ground_truth for this sample"
        elif metric.needs_context and not item.contexts:
            error = "no context for this sample"
        else:
            token = current_usage.set(usage)
            sample_token = current_sample.set(item)
            try:
                result = metric.score(item)
                value, reasoning = result.value, result.reasoning
            except ProviderError as exc:
                self._error = self._error or exc  # a judge that cannot be called at all fails the run, as a candidate would
                raise
            except Exception as exc:  # one sample's bad judgement must not sink the run: recorded, not dropped
                error = str(exc) if isinstance(exc, AgilityError) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            finally:
                current_sample.reset(sample_token)
                current_usage.reset(token)
        row[metric.name] = value
        row[f"{metric.name}_reasoning"] = reasoning
        row[f"{metric.name}_error"] = error
        with self._lock:
            self._left[index] -= 1
            last = self._left[index] == 0
        if last:
            row.update(usage.columns())
            self._done.put(index)


def _new_usage() -> JudgeUsage:
    from agility_mlflow.scoring._judge_model import JudgeUsage  # imports this module: not at the top

    return JudgeUsage()


def judge_rows(
    rows: Sequence[dict[str, Any]],
    inputs: Sequence[JudgeInput | None],
    metrics: Sequence[Scorer],
    *,
    workers: int = 4,
) -> None:
    """Score ``rows`` in place with every judged metric, and count each sample's judge usage.

    ``inputs[i]`` is ``None`` for a row whose answer failed: it gets no judge call. Each row gains
    the metric columns and :data:`JUDGE_COLUMNS` (what judging that sample took). Each metric
    must have been built with its judge. :class:`RowJudge` does the same row by row, as answers arrive.
    """
    if not metrics:
        return
    with RowJudge(metrics, workers=workers) as judge:
        for index, (row, item) in enumerate(zip(rows, inputs)):
            judge.submit(index, row, item)
        for _ in judge.finish():
            pass


def judge_metrics(rows: Sequence[Mapping[str, Any]], metrics: Sequence[Scorer]) -> dict[str, float]:
    """Run-level judge figures: ``<name>_n_errors`` per metric, and the judge's calls, tokens and cost.

    ``judge_cost_usd_total`` is left out when the judge's price is unknown (never reported as 0).

    Example:
        >>> rows = [{"error": None, "llm_judge_error": None, "judge_calls": 1, "judge_input_tokens": 300,
        ...          "judge_output_tokens": 40, "judge_cost_usd": 0.001, "judge_malformed": 0},
        ...         {"error": None, "llm_judge_error": "no usable reply", "judge_calls": 3, "judge_input_tokens": 900,
        ...          "judge_output_tokens": 120, "judge_cost_usd": 0.003, "judge_malformed": 3}]
        >>> m = judge_metrics(rows, [JudgedMetric("llm_judge", "llm_judge", None)])
        >>> m["llm_judge_n_errors"], m["judge_calls"], m["judge_input_tokens_total"], round(m["judge_cost_usd_total"], 6)
        (1.0, 4.0, 1200.0, 0.004)
    """
    if not metrics:
        return {}
    judged = [row for row in rows if row.get("judge_calls") is not None]
    result = {f"{m.name}_n_errors": float(sum(1 for row in judged if row.get(f"{m.name}_error"))) for m in metrics}
    result["judge_calls"] = float(sum(row["judge_calls"] for row in judged))
    result["judge_cache_hits"] = float(sum(row.get("judge_cached") or 0 for row in judged))
    result["judge_input_tokens_total"] = float(sum(row["judge_input_tokens"] or 0 for row in judged))
    result["judge_output_tokens_total"] = float(sum(row["judge_output_tokens"] or 0 for row in judged))
    result["judge_malformed_replies"] = float(sum(row["judge_malformed"] or 0 for row in judged))
    costs = [row["judge_cost_usd"] for row in judged]
    if all(cost is not None for cost in costs):
        result["judge_cost_usd_total"] = float(sum(costs))
    return result
