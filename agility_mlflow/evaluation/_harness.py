"""Generate, score and aggregate: one configuration's answers on a set of samples, without writing to MLflow."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agility_mlflow.backends import Backend
from agility_mlflow.dataset import GoldenDataset, references
from agility_mlflow.evaluation._entities import CONTEXT, EvaluationResult, PlannedRun
from agility_mlflow.pipeline import run_steps, step_metrics, step_names
from agility_mlflow.pricing import Price, cost_usd, lookup_price
from agility_mlflow.runner import Outcome, Request, Runner
from agility_mlflow.scoring import JudgeInput, RowJudge, Scorer, judge_metrics, mean_score, run_metrics
from agility_mlflow.vocabulary import (
    CACHE_WRITE_TOKENS,
    CACHED,
    CACHED_INPUT_TOKENS,
    COST,
    ERROR,
    FINISH_REASON,
    INPUT_DIGEST,
    INPUT_TOKENS,
    LATENCY,
    OUTPUT,
    OUTPUT_TOKENS,
    PROVIDER_LATENCY,
    REASONING_TOKENS,
    REFERENCE,
    SAMPLE_ID,
    TTFT,
)

OnRow = Callable[[int, Outcome, dict[str, Any]], None]
"""Told ``(index, outcome, row)`` once per sample, when that sample's row is scored."""


def evaluate(
    configuration: PlannedRun,
    backend: Backend,
    dataset: GoldenDataset,
    metrics: Sequence[Scorer],
    runner: Runner,
    pricing: dict[str, Any] | None = None,
    *,
    on_row: OnRow | None = None,
) -> EvaluationResult:
    """Generate answers for every sample, score them and aggregate; writes nothing to MLflow.

    ``on_row(index, outcome, row)`` sees each sample's scored row as soon as it is complete (see :func:`score_samples`).
    """
    return evaluate_samples(configuration, backend, dataset.rows, metrics, runner, pricing, on_row=on_row)


def evaluate_samples(
    configuration: PlannedRun,
    backend: Backend,
    samples: Sequence[dict[str, Any]],
    metrics: Sequence[Scorer],
    runner: Runner,
    pricing: dict[str, Any] | None = None,
    *,
    on_row: OnRow | None = None,
) -> EvaluationResult:
    """:func:`evaluate` on ``samples`` (dataset rows), e.g. one slice of a sweep's trial."""
    price = lookup_price(configuration.model.provider, configuration.model.model_id, pricing or {}, configuration.model.mode)
    outcomes, rows = score_samples(configuration, backend, samples, metrics, runner, price, on_row=on_row)
    return EvaluationResult(rows, aggregate(rows, outcomes, metrics), outcomes, price)


def combine(parts: Sequence[EvaluationResult], metrics: Sequence[Scorer]) -> EvaluationResult:
    """One result of evaluations of the same configuration on disjoint samples (a trial's slices so far)."""
    rows = [row for part in parts for row in part.rows]
    outcomes = [outcome for part in parts for outcome in part.outcomes]
    return EvaluationResult(rows, aggregate(rows, outcomes, metrics), outcomes, parts[0].price if parts else None)


def score_samples(
    configuration: PlannedRun,
    backend: Backend,
    samples: Sequence[dict[str, Any]],
    metrics: Sequence[Scorer],
    runner: Runner,
    price: Price | None,
    *,
    on_row: OnRow | None = None,
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """The runner's outcomes for ``samples`` and one scored ``eval_results`` row per sample.

    String metrics score each answer directly; judged metrics then ask their judge, sample by
    sample in parallel, and add their reasoning, error and the judge's usage to the rows.
    ``on_row(index, outcome, row)`` is called once per sample, on this thread, with its complete
    row: while the other calls still run when every metric is a string metric of a one-step
    prompt, as each sample is judged when there are judged metrics, else at the end.
    """
    params = configuration.model.params.as_dict()
    columns = input_columns(configuration)
    judged = [m for m in metrics if m.needs_judge]
    if configuration.steps:
        outcomes, step_columns = run_steps(configuration.steps, backend, params, samples, runner, price, settings=runner.settings,
                                           template=configuration.template, description=configuration.run_name)
        rows = [{**_score(outcome, metrics, price), **step, INPUT_DIGEST: input_digest(sample, columns)}
                for outcome, step, sample in zip(outcomes, step_columns, samples)]
    else:
        requests = [Request(row["sample_id"], configuration.template.render(row), row) for row in samples]
        rows = [{} for _ in requests]

        def score(index: int, outcome: Outcome) -> None:
            rows[index] = {**_score(outcome, metrics, price), INPUT_DIGEST: input_digest(samples[index], columns)}
            if on_row is not None and not judged:  # the row is complete: hand it over while the other calls run
                on_row(index, outcome, rows[index])

        outcomes = runner.run(backend, params, requests, description=configuration.run_name, on_outcome=score)
    if judged:
        # Judged once every answer is in: judge calls running beside the candidate's slowed its measured
        # latency (p95 0.15-0.18 s -> 0.25-0.36 s on a 100 ms model). Each row is handed over as soon as
        # it is judged, so its trace is written while the other samples are judged.
        with RowJudge(judged, workers=runner.settings.concurrency) as judge:
            for index, outcome in enumerate(outcomes):
                judge.submit(index, rows[index], judge_input(outcome) if outcome.generation is not None else None)
            for index in judge.finish():
                if on_row is not None:
                    on_row(index, outcomes[index], rows[index])
    elif on_row is not None and configuration.steps:  # rows complete only now
        for index, (outcome, row) in enumerate(zip(outcomes, rows)):
            on_row(index, outcome, row)
    return outcomes, rows


def input_columns(configuration: PlannedRun) -> list[str]:
    """The dataset columns a sample's answer and scores depend on, references aside: the prompts'
    variables (of every step, less those earlier steps produce, plus replayed steps' recorded outputs),
    the question and the context the judge reads."""
    steps = configuration.steps
    variables = set(configuration.template.variables).union(*(step.template.variables for step in steps))
    variables |= {step.replay.output for step in steps if step.replay is not None} | {"question", CONTEXT}
    return sorted(variables - {step.variable for step in steps})


def input_digest(sample: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A short fingerprint of ``sample``'s values in ``columns``: equal digests, equal inputs.

    ``agility check`` compares it with the registered run's to pair only samples that did not change.

    Example:
        >>> input_digest({"question": "Revenue?", "n": 1}, ["question"]) == input_digest({"question": "Revenue?"}, ["question"])
        True
        >>> input_digest({"question": "Revenue?"}, ["question"]) == input_digest({"question": "Revenue in 2023?"}, ["question"])
        False
    """
    import hashlib
    import json

    values = {column: sample.get(column) for column in columns}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def judge_input(outcome: Outcome) -> JudgeInput:
    """What the judge sees of one answered sample: the question (or the rendered user message), references, context."""
    sample = outcome.request.sample
    question = sample.get("question")
    if not question:
        question = next((m["content"] for m in reversed(outcome.request.messages) if m.get("role") == "user"), "")
    context = sample.get(CONTEXT)
    contexts = [str(c) for c in context] if isinstance(context, list) else ([str(context)] if context else [])
    assert outcome.generation is not None
    return JudgeInput(str(question), outcome.generation.text, references(sample), contexts, sample)


def aggregate(rows: Sequence[dict[str, Any]], outcomes: Sequence[Outcome], metrics: Sequence[Scorer]) -> dict[str, float]:
    """Run-level metrics: counts, latency, tokens, cost, the mean of each quality metric, the judge's usage."""
    result = run_metrics(rows)
    result["n_cache_hits"] = float(sum(o.cached for o in outcomes))
    for metric in metrics:
        value = mean_score([row[metric.name] for row in rows if row["error"] is None])
        if value is not None:
            result[metric.name] = value
    result.update(judge_metrics(rows, [m for m in metrics if m.needs_judge]))
    result.update(step_metrics(rows, step_names(rows)))
    return result


def _score(outcome: Outcome, metrics: Sequence[Scorer], price: Price | None) -> dict[str, Any]:
    generation = outcome.generation
    sample = outcome.request.sample
    refs = references(sample)
    row: dict[str, Any] = {
        SAMPLE_ID: outcome.sample_id,
        OUTPUT: generation.text if generation else None,
        REFERENCE: refs[0] if len(refs) == 1 else (refs or None),
        LATENCY: generation.latency_s if generation else None,
        TTFT: generation.ttft_s if generation else None,
        INPUT_TOKENS: generation.input_tokens if generation else None,
        OUTPUT_TOKENS: generation.output_tokens if generation else None,
        COST: cost_usd(price, generation.input_tokens, generation.output_tokens, generation.cached_input_tokens,
                       generation.cache_write_tokens) if generation else None,
        REASONING_TOKENS: generation.reasoning_tokens if generation else None,
        CACHED_INPUT_TOKENS: generation.cached_input_tokens if generation else None,
        CACHE_WRITE_TOKENS: generation.cache_write_tokens if generation else None,
        PROVIDER_LATENCY: generation.provider_latency_s if generation else None,
        FINISH_REASON: generation.finish_reason if generation else None,
        CACHED: outcome.cached,
        ERROR: outcome.error,
    }
    # Metrics that need no judge score now; judged ones are scored after, in parallel (score_samples).
    item = judge_input(outcome) if generation else None
    for metric in metrics:
        if not metric.needs_judge:
            row[metric.name] = metric.score(item).value if item else None
    return row
