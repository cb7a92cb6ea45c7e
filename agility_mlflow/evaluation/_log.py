"""Writing one evaluation to its MLflow run: params, metrics, the results table, config, dataset, traces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agility_mlflow.backends import Generation
from agility_mlflow.evaluation._entities import EvaluationResult, PlannedRun, Project
from agility_mlflow.pricing import Price, cost_usd
from agility_mlflow.runner import Outcome
from agility_mlflow.vocabulary import DATASET_DIGEST, PROMPT, TRACE_CACHED, TRACE_SAMPLE_ID, score_key


def log_evaluation(
    project: Project,
    configuration: PlannedRun,
    result: EvaluationResult,
    run_id: str,
    prompt_uri: str,
    traces: SampleTraces | None = None,
) -> None:
    """Write one evaluation's params, metrics, table, config, dataset and traces to the active run.

    ``traces`` holds the sample traces already submitted while the calls ran; the others are written here.
    """
    from agility_mlflow import tracking

    model = configuration.model
    price = result.price
    # Replayed answers were made with settings nobody recorded: log only those the config states, never defaults.
    inference = model.params.model_dump(exclude_none=True, exclude_unset=model.provider == "replay")
    params: dict[str, Any] = {
        "provider": model.provider,
        "model_id": model.model_id,
        **{k: v for k, v in inference.items() if v not in ({}, [])},
        DATASET_DIGEST: project.dataset.digest,
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
    if project.config.run.traces:
        # Traces first: their writer may still hold the store (a SQLite file's one write lock) and
        # would keep winning it from the writes below; waiting for it once is shorter.
        (traces or SampleTraces(project, configuration, prompt_uri, result.price)).finish(result)
    tracking.log_run_data(run_id, params, result.metrics)
    tracking.log_results_table(run_id, result.rows)
    tracking.log_config(run_id, project.config.public_dict())
    tracking.log_dataset(project.dataset.rows, str(project.dataset.path), project.dataset.path.name,
                         project.dataset.subset_digest or project.dataset.digest)


class SampleTraces:
    """One trace per sample of a run, with the judge's assessments, each submitted to the background
    writer as soon as its row is scored.

    Handing :meth:`add` to :func:`~agility_mlflow.evaluation.evaluate` as ``on_row`` writes the traces
    while the other samples' calls still run, instead of after them all; :meth:`finish` adds any
    sample not yet traced and waits for the writer.
    Must be used while the run is active: each trace is linked to it.

    Example:
        >>> traces = SampleTraces(project, configuration, "prompts:/qa/1", price)  # doctest: +SKIP
        >>> result = evaluate(configuration, backend, project.dataset, project.metrics, runner, on_row=traces.add)  # doctest: +SKIP
        >>> traces.finish(result)  # doctest: +SKIP
    """

    def __init__(self, project: Project, configuration: PlannedRun, prompt_uri: str, price: Price | None) -> None:
        from agility_mlflow import tracking

        tracking.prepare_traces()  # made before the calls start (see _trace_writer)
        self._configuration = configuration
        self._prompt_uri = prompt_uri
        self._price = price
        self._metric_names = [m.name for m in project.metrics]
        self._judged = project.judged_metrics
        self._trace_ids: dict[int, str] = {}

    def add(self, index: int, outcome: Outcome, row: Mapping[str, Any]) -> None:
        """Submit sample ``index``'s trace: its call, answer, usage, cost, every score of its row and the judge's assessments."""
        import time

        from agility_mlflow import tracking

        model = self._configuration.model
        generation = outcome.generation
        start, end = outcome.started_ns, outcome.ended_ns
        if not start or model.provider == "replay":  # no call now: time the trace by the recorded latency
            start = time.time_ns()
            end = start + int(((generation.latency_s if generation else 0) or 0) * 1e9)
        scores = {score_key(name): row[name] for name in self._metric_names if row.get(name) is not None}
        judge = self._judged[0].judge if self._judged else None
        judgements = [tracking.Judgement(m.name, row[m.name], row[f"{m.name}_reasoning"], row[f"{m.name}_error"], judge.name if judge else "judge")
                      for m in self._judged] if generation is not None else []
        self._trace_ids[index] = tracking.log_sample_trace(tracking.SampleCall(
            name=self._configuration.run_name,
            provider=model.provider,
            model_id=model.model_id,
            messages=outcome.request.messages,
            output=generation.text if generation else None,
            error=outcome.error,
            start_ns=start,
            end_ns=end,
            input_tokens=generation.input_tokens if generation else None,
            output_tokens=generation.output_tokens if generation else None,
            attributes={TRACE_SAMPLE_ID: outcome.sample_id, PROMPT: self._prompt_uri, TRACE_CACHED: outcome.cached, **scores},
            cost_usd=_cost_split(self._price, generation),
        ), judgements)

    def finish(self, result: EvaluationResult) -> None:
        """Trace the samples not traced yet and wait until every trace and its assessments are stored."""
        from agility_mlflow import tracking

        for index, (outcome, row) in enumerate(zip(result.outcomes, result.rows)):
            if index not in self._trace_ids:
                self.add(index, outcome, row)
        tracking.flush_traces()


def _cost_split(price: Price | None, generation: Generation | None) -> tuple[float, float] | None:
    """(input, output) USD of one answer at the run's price, for the trace's cost; ``None`` when unknown."""
    if generation is None or cost_usd(price, generation.input_tokens, generation.output_tokens) is None:
        return None
    return cost_usd(price, generation.input_tokens, 0) or 0.0, cost_usd(price, 0, generation.output_tokens) or 0.0
