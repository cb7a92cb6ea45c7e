"""One evaluation session: the backends, runner, judge and experiment a command evaluates with, closed together.

``agility run``, ``sweep``, ``check``, ``migrate`` and ``optimize`` all open one: it builds each
model's backend once (a missing key fails before any run), the judge its judged metrics are built
with, and points MLflow at the experiment (marking FAILED the runs a dead process left RUNNING);
leaving it closes every backend it built, the judge's too. Within it, one call evaluates a prompt
version on a model with its parameters over samples into a scored, logged run
(:meth:`EvaluationSession.evaluate_into_run`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from agility_mlflow.backends import Backend, create_backend
from agility_mlflow.cache import ResponseCache
from agility_mlflow.errors import AgilityError, InputError
from agility_mlflow.evaluation._calibration import calibrate
from agility_mlflow.evaluation._entities import EvaluationResult, PlannedRun, Project, RunSummary
from agility_mlflow.evaluation._harness import evaluate, evaluate_samples
from agility_mlflow.evaluation._judging import create_judge, warn_same_family
from agility_mlflow.evaluation._log import SampleTraces, log_evaluation
from agility_mlflow.pricing import lookup_price
from agility_mlflow.runner import Runner
from agility_mlflow.scoring import Judge

logger = logging.getLogger(__name__)


class EvaluationSession:
    """Owns a project's backends, runner, judge and experiment; ``with`` closes them.

    Args:
        project: What :func:`~agility_mlflow.evaluation.prepare` returned.
        tracking_uri: Overrides the config's ``tracking_uri`` and ``MLFLOW_TRACKING_URI``.
        runner: A runner to use (its cache, call statistics, a budget guard); by default one with the response cache.
        progress: The default runner's progress bar; by default only on a terminal.
        open_backends: Build every configuration's backend on entering, so a missing key fails before any run;
            otherwise each is built when first used.
        with_judge: Build the judge the judged metrics need (a command that never scores leaves it out).

    Example:
        >>> project = prepare("projects/financial-qa/agility.yaml", limit=3)  # doctest: +SKIP
        >>> with EvaluationSession(project, open_backends=True) as session:  # doctest: +SKIP
        ...     summary = session.evaluate_into_run(project.configurations[1], "prompts:/fin-qa/1")
        >>> summary.metrics["n_samples"]  # doctest: +SKIP
        3.0
    """

    def __init__(
        self,
        project: Project,
        *,
        tracking_uri: str | None = None,
        runner: Runner | None = None,
        progress: bool | None = None,
        open_backends: bool = False,
        with_judge: bool = True,
    ) -> None:
        self.project = project
        self.runner = runner or Runner(project.config.run, ResponseCache(), progress=progress)
        self.judge: Judge | None = None
        self._tracking_uri = tracking_uri
        self._open_backends = open_backends
        self._with_judge = with_judge
        self._experiment_id: str | None = None
        self._backends: dict[str, Backend] = {}
        self._owned: list[Backend] = []

    def __enter__(self) -> EvaluationSession:
        try:
            if self._open_backends:
                for configuration in self.project.configurations:
                    self.backend(configuration)
            if self._with_judge:
                self.judge = create_judge(self.project, self.runner)
                warn_same_family(self.project)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close every backend the session built or adopted, the judge's too."""
        backends = [*self._backends.values(), *self._owned, *([self.judge.backend] if self.judge is not None else [])]
        self._backends, self._owned = {}, []
        for backend in backends:
            backend.close()

    @property
    def experiment_id(self) -> str:
        """The config's experiment, opened on first use (see :meth:`open_experiment`)."""
        return self.open_experiment()

    def open_experiment(self) -> str:
        """Point MLflow at the tracking store and the config's experiment (created if new), once; mark FAILED
        the runs a dead process left RUNNING there. Returns the experiment id.

        Deferred until a command first needs it, so bad input found before writes nothing to MLflow.
        """
        if self._experiment_id is None:
            from agility_mlflow import tracking

            cfg = self.project.config
            self._experiment_id = tracking.configure(self._tracking_uri or cfg.resolved_tracking_uri(), cfg.experiment)
            for run_id in tracking.fail_abandoned_runs(self._experiment_id):
                logger.warning("run %s was left RUNNING by a process that died: marked FAILED", run_id)
        return self._experiment_id

    def backend(self, configuration: PlannedRun) -> Backend:
        """The backend of ``configuration``'s model, built on first use (one per configuration name)."""
        backend = self._backends.get(configuration.name)
        if backend is None:
            backend = self._backends[configuration.name] = _create_backend(self.project, configuration)
        return backend

    def adopt(self, backend: Backend) -> Backend:
        """Close ``backend`` with the session (a backend built outside it, e.g. a rewriting or reflection model)."""
        self._owned.append(backend)
        return backend

    def evaluate(self, configuration: PlannedRun, samples: Sequence[dict[str, Any]] | None = None) -> EvaluationResult:
        """Generate, score and aggregate ``configuration`` on ``samples`` (default: the project's dataset); writes nothing."""
        rows = self.project.dataset.rows if samples is None else samples
        return evaluate_samples(configuration, self.backend(configuration), rows, self.project.metrics, self.runner,
                                self.project.config.price_overrides())

    @contextlib.contextmanager
    def run(self, run_name: str, tags: Mapping[str, str], *, prompt_uri: str | None = None,
            parent_run_id: str | None = None) -> Iterator[str]:
        """An MLflow run in the session's experiment, FINISHED only when the body completes (see ``tracking.evaluation_run``)."""
        from agility_mlflow import tracking

        with tracking.evaluation_run(self.experiment_id, run_name, tags, prompt_uri=prompt_uri, parent_run_id=parent_run_id) as run_id:
            yield run_id

    def log(self, configuration: PlannedRun, result: EvaluationResult, run_id: str, prompt_uri: str) -> None:
        """Write ``result`` (params, metrics, table, config, dataset, traces) to run ``run_id``."""
        log_evaluation(self.project, configuration, result, run_id, prompt_uri)

    def evaluate_into_run(
        self,
        configuration: PlannedRun,
        prompt_uri: str,
        *,
        sample_ids: Sequence[str] | None = None,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        on_result: Callable[[EvaluationResult, str], None] | None = None,
    ) -> RunSummary:
        """Evaluate ``configuration`` (a prompt version, a model, its parameters) on the project's samples, or
        ``sample_ids`` of them, into one scored, logged MLflow run; FAILED if anything raises.

        ``tags`` add to the role and candidate tags; ``on_result(result, run_id)`` sees the scored rows before the run ends.
        """
        import dataclasses

        project = self.project if sample_ids is None else dataclasses.replace(self.project, dataset=self.project.dataset.subset(sample_ids))
        return evaluate_into_run(project, configuration, self.backend(configuration), self.runner, prompt_uri, self.experiment_id,
                                 parent_run_id=parent_run_id, run_name=run_name, tags=tags, on_result=on_result)

    def source_run(self) -> str | None:
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

        project = self.project
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
        runs = MlflowClient().search_runs([self.experiment_id], " and ".join(filters), order_by=["attributes.start_time DESC"], max_results=20)
        for run in runs:
            if metric_names <= set(run.data.metrics):
                logger.info("source run %s already holds this dataset and model: reused", run.info.run_id)
                return str(run.info.run_id)
        return self.evaluate_into_run(source, prompt_uri).run_id


def _create_backend(project: Project, configuration: PlannedRun) -> Backend:
    """``configuration``'s backend; a bad model section is an :class:`InputError` naming the source or candidate."""
    try:
        return create_backend(configuration.model, project.config.run, project.recorded.get(configuration.name))
    except AgilityError as exc:
        where = "source" if configuration.role == "source" else f"candidate '{configuration.name}'"
        raise InputError(f"{project.config.path.name}: {where}: {exc}") from None


def evaluate_into_run(
    project: Project,
    configuration: PlannedRun,
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
