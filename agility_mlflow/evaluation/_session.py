"""Backends, and one evaluated, logged run."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agility_mlflow.backends import Backend, create_backend
from agility_mlflow.errors import AgilityError, InputError
from agility_mlflow.evaluation._calibration import calibrate
from agility_mlflow.evaluation._entities import Configuration, EvaluationResult, Project, RunSummary
from agility_mlflow.evaluation._harness import evaluate
from agility_mlflow.evaluation._log import SampleTraces, log_evaluation
from agility_mlflow.pricing import lookup_price
from agility_mlflow.runner import Runner

logger = logging.getLogger(__name__)


def create_backends(project: Project) -> dict[str, Backend]:
    """One backend per configured model, built up front so a missing key fails before any run."""
    backends: dict[str, Backend] = {}
    for configuration in project.configurations:
        if configuration.name in backends:
            continue
        try:
            backends[configuration.name] = create_backend(configuration.model, project.config.run, project.recorded.get(configuration.name))
        except AgilityError as exc:
            where = "source" if configuration.role == "source" else f"candidate '{configuration.name}'"
            raise InputError(f"{project.config.path.name}: {where}: {exc}") from None
    return backends


def source_run(project: Project, runner: Runner, experiment_id: str) -> str | None:
    """The id of a FINISHED ``source`` run of this project's source model on its dataset, logged now unless one is identical.

    ``agility compare`` decides candidates and trials against the experiment's latest source run, so a
    command that logs only trials (``agility sweep``) logs the source too. An earlier source run is
    reused when it holds the same dataset (digest and sample count), model, prompt version and metrics;
    replaying recorded answers is cheap, but one source run per sweep would clutter the experiment.
    ``None`` when the project has no source (no recorded answers).
    """
    from mlflow import MlflowClient

    from agility_mlflow import tracking
    from agility_mlflow.compare import finished_with_role

    source = next((c for c in project.configurations if c.role == "source"), None)
    if source is None:
        return None
    prompt_uri = tracking.register_prompt(source.template)
    filters = [
        finished_with_role("source"),
        f"params.dataset_digest = '{project.dataset.digest}'",
        f"params.provider = '{source.model.provider}'",
        f"params.model_id = '{source.model.model_id}'",
        f"tags.`{tracking.PROMPT}` = '{prompt_uri}'",
        f"metrics.n_samples = {len(project.dataset.rows)}",
    ]
    metric_names = {m.name for m in project.metrics}
    for run in MlflowClient().search_runs([experiment_id], " and ".join(filters), order_by=["attributes.start_time DESC"], max_results=20):
        if metric_names <= set(run.data.metrics):
            logger.info("source run %s already holds this dataset and model: reused", run.info.run_id)
            return str(run.info.run_id)
    backend = create_backend(source.model, project.config.run, project.recorded.get(source.name))
    try:
        return _run_configuration(project, source, backend, runner, {source.template.name: prompt_uri}, experiment_id, None).run_id
    finally:
        backend.close()


def _run_configuration(
    project: Project,
    configuration: Configuration,
    backend: Backend,
    runner: Runner,
    prompt_uris: dict[str, str],
    experiment_id: str,
    parent_run_id: str | None,
) -> RunSummary:
    return evaluate_into_run(
        project, configuration, backend, runner, prompt_uris[configuration.template.name], experiment_id, parent_run_id=parent_run_id
    )


def evaluate_into_run(
    project: Project,
    configuration: Configuration,
    backend: Backend,
    runner: Runner,
    prompt_uri: str,
    experiment_id: str,
    *,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    on_result: Callable[[EvaluationResult, str], None] | None = None,
) -> RunSummary:
    """Evaluate ``configuration`` on ``project.dataset`` into one logged MLflow run (FAILED if anything raises).

    Evaluate a subset by passing a project whose dataset is ``dataset.subset(ids)``. ``tags`` add to
    the role and candidate tags; ``on_result(result, run_id)`` sees the scored rows before the run ends.

    Example:
        >>> project = prepare("projects/financial-qa/agility.yaml", limit=3)  # doctest: +SKIP
        >>> summary = evaluate_into_run(project, project.configurations[1], backend, runner, "prompts:/fin-qa/1", "0")  # doctest: +SKIP
    """
    from agility_mlflow import tracking

    all_tags = {tracking.ROLE: configuration.role, tracking.CANDIDATE: configuration.name, **(tags or {})}
    with tracking.evaluation_run(
        experiment_id, run_name or configuration.run_name, all_tags, prompt_uri=prompt_uri, parent_run_id=parent_run_id
    ) as run_id:
        pricing = project.config.price_overrides()
        traces = None
        if project.config.run.traces:
            price = lookup_price(configuration.model.provider, configuration.model.model_id, pricing, configuration.model.mode)
            traces = SampleTraces(project, configuration, prompt_uri, price)
        result = evaluate(configuration, backend, project.dataset, project.metrics, runner, pricing,
                          on_row=traces.add if traces is not None else None)
        if configuration.role == "source":
            result.metrics.update(calibrate(project, result))
        if result.price is None:
            logger.warning(
                "no price known for %s model '%s': cost is reported as unknown (add it under pricing:)",
                configuration.model.provider,
                configuration.model.model_id,
            )
        log_evaluation(project, configuration, result, run_id, prompt_uri, traces)
        if on_result is not None:
            on_result(result, run_id)
        if result.metrics["n_errors"] == result.metrics["n_samples"]:
            first = next(row["error"] for row in result.rows if row["error"])
            raise AgilityError(f"{configuration.run_name}: every sample failed; first error: {first}")
    return RunSummary(run_id, configuration.role, configuration.name, prompt_uri, result.metrics)
