"""Writing one evaluation to its MLflow run: params, metrics, the results table, config, dataset, traces."""

from __future__ import annotations

from typing import Any

from agility_mlflow.backends import Generation
from agility_mlflow.evaluation._entities import Configuration, EvaluationResult, Project
from agility_mlflow.pricing import Price, cost_usd


def log_evaluation(project: Project, configuration: Configuration, result: EvaluationResult, run_id: str, prompt_uri: str) -> None:
    """Write one evaluation's params, metrics, table, config, dataset and traces to the active run."""
    from agility_mlflow import tracking

    model = configuration.model
    price = result.price
    # Replayed answers were made with settings nobody recorded: log only those the config states, never defaults.
    inference = model.params.model_dump(exclude_none=True, exclude_unset=model.provider == "replay")
    params: dict[str, Any] = {
        "provider": model.provider,
        "model_id": model.model_id,
        **{k: v for k, v in inference.items() if v not in ({}, [])},
        "dataset_digest": project.dataset.digest,
        "prompt_name": configuration.template.name,
        "pricing_source": price.source if price else "unknown",
    }
    if model.mode == "batch":  # the provider's batch engine: no per-answer latency exists to measure
        params.update(mode="batch", latency="not measured (batch inference)")
    if project.dataset.subset_digest is not None:  # which samples of the golden set (an optimization's test split)
        params["dataset_subset_digest"] = project.dataset.subset_digest
    if price is not None:
        params["price_input_usd_per_mtok"] = price.input_per_mtok
        params["price_output_usd_per_mtok"] = price.output_per_mtok
        for key, rate in (("price_cached_input_usd_per_mtok", price.cached_input_per_mtok), ("price_cache_write_usd_per_mtok", price.cache_write_per_mtok)):
            if rate is not None:
                params[key] = rate
    judge = next((m.judge for m in project.judged_metrics if m.judge is not None), None)
    if judge is not None:
        params["judge_provider"] = judge.config.provider
        params["judge_model_id"] = judge.config.model_id
    tracking.log_run_data(run_id, params, result.metrics)
    tracking.log_results_table(run_id, result.rows)
    tracking.log_config(run_id, project.config.public_dict())
    tracking.log_dataset(project.dataset.rows, str(project.dataset.path), project.dataset.path.name,
                         project.dataset.subset_digest or project.dataset.digest)
    if project.config.run.traces:
        _log_traces(project, configuration, result, prompt_uri)


def _log_traces(project: Project, configuration: Configuration, result: EvaluationResult, prompt_uri: str) -> None:
    import time

    from agility_mlflow import tracking

    metric_names = [m.name for m in project.metrics]
    judged = project.judged_metrics
    assessments = []
    for outcome, row in zip(result.outcomes, result.rows):
        generation = outcome.generation
        start, end = outcome.started_ns, outcome.ended_ns
        if not start or configuration.model.provider == "replay":  # no call now: time the trace by the recorded latency
            start = time.time_ns()
            end = start + int(((generation.latency_s if generation else 0) or 0) * 1e9)
        scores = {f"agility.score.{name}": row[name] for name in metric_names if row.get(name) is not None}
        trace_id = tracking.log_sample_trace(tracking.SampleCall(
            name=configuration.run_name,
            provider=configuration.model.provider,
            model_id=configuration.model.model_id,
            messages=outcome.request.messages,
            output=generation.text if generation else None,
            error=outcome.error,
            start_ns=start,
            end_ns=end,
            input_tokens=generation.input_tokens if generation else None,
            output_tokens=generation.output_tokens if generation else None,
            attributes={"agility.sample_id": outcome.sample_id, "agility.prompt": prompt_uri, "agility.cached": outcome.cached, **scores},
            cost_usd=_cost_split(result.price, generation),
        ))
        if generation is not None:
            assessments += [(trace_id, m.name, row[m.name], row[f"{m.name}_reasoning"], row[f"{m.name}_error"]) for m in judged]
    tracking.flush_traces()
    if assessments:
        tracking.log_judge_assessments(assessments, judged[0].judge.name if judged[0].judge else "judge")


def _cost_split(price: Price | None, generation: Generation | None) -> tuple[float, float] | None:
    """(input, output) USD of one answer at the run's price, for the trace's cost; ``None`` when unknown."""
    if generation is None or cost_usd(price, generation.input_tokens, generation.output_tokens) is None:
        return None
    return cost_usd(price, generation.input_tokens, 0) or 0.0, cost_usd(price, 0, generation.output_tokens) or 0.0
