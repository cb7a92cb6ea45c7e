"""Metrics a judge model scores: the custom ``llm_judge``, Ragas and DeepEval metrics.

They are registered by name like the string metrics, but scored after generation, sample by
sample in parallel, by :func:`judge_rows`. Each adds its score column to ``eval_results.json``, a
``<name>_reasoning`` column with the judge's reason and, when the judge failed on a sample, a
``<name>_error`` column; a failed sample is left out of the run's mean and counted in
``<name>_n_errors``, never scored 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agility_mlflow.errors import AgilityError, ProviderError
from agility_mlflow.scoring._scorer import JudgedScore, JudgeInput, Scorer

if TYPE_CHECKING:
    from agility_mlflow.scoring._judge_model import Judge

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
    must have been built with its judge.
    """
    from agility_mlflow.scoring._judge_model import JudgeUsage, current_sample, current_usage

    if not metrics:
        return
    for metric in metrics:
        if metric.needs_judge and metric.judge is None:
            raise AgilityError(f"metric '{metric.name}' was built without a judge: get_metric('{metric.name}', judge=...)")
    usages = [JudgeUsage() for _ in rows]
    for row in rows:
        for metric in metrics:
            for column in _columns(metric):
                row.setdefault(column, None)
    jobs = [(i, metric) for metric in metrics for i, item in enumerate(inputs) if item is not None]

    def score(job: tuple[int, Scorer]) -> None:
        i, metric = job
        item = inputs[i]
        assert item is not None
        value, reasoning, error = None, None, None
        if metric.needs_reference and not item.references:
            error = "no answer_ground_truth for this sample"
        elif metric.needs_context and not item.contexts:
            error = "no context for this sample"
        else:
            token = current_usage.set(usages[i])
            sample_token = current_sample.set(item)
            try:
                result = metric.score(item)
                value, reasoning = result.value, result.reasoning
            except ProviderError:
                raise  # a judge that cannot be called at all fails the run, as a candidate would
            except Exception as exc:  # one sample's bad judgement must not sink the run: recorded, not dropped
                error = str(exc) if isinstance(exc, AgilityError) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            finally:
                current_sample.reset(sample_token)
                current_usage.reset(token)
        rows[i][metric.name] = value
        rows[i][f"{metric.name}_reasoning"] = reasoning
        rows[i][f"{metric.name}_error"] = error

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="agility-judge") as pool:
        list(pool.map(score, jobs))
    for row, item, usage in zip(rows, inputs, usages):
        row.update(usage.columns() if item is not None else dict.fromkeys(JUDGE_COLUMNS))
    for metric in metrics:
        errors = [row[f"{metric.name}_error"] for row, item in zip(rows, inputs) if item is not None and row[f"{metric.name}_error"]]
        if errors:
            logger.warning("%s: %d sample(s) not scored; first: %s", metric.name, len(errors), errors[0])


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
