"""``agility run``: one MLflow run per prompt x model x inference configuration, plus the source run.

Everything that can be checked is checked before the first model call: the config, the dataset,
every template against the dataset's columns, every backend's settings. Then each configuration
is generated, scored and logged in its own run.

Example:
    >>> results = run_project("projects/financial-qa/agility.yaml", limit=3)  # doctest: +SKIP
    >>> [(r.role, r.name, r.metrics["n_samples"]) for r in results]  # doctest: +SKIP
    [('source', 'source', 3.0), ('candidate', 'local-smollm', 3.0)]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agility_mlflow.backends import Backend, Generation, create_backend
from agility_mlflow.cache import ResponseCache
from agility_mlflow.config import Config, ModelConfig, SourceConfig, load_config
from agility_mlflow.dataset import GROUND_TRUTH, SOURCE_ANSWER, GoldenDataset, load_dataset, references
from agility_mlflow.errors import AgilityError, InputError, Problems
from agility_mlflow.estimate import NOTHING, Estimate, estimate_evaluation
from agility_mlflow.pipeline import PlannedStep, run_steps, step_metrics, step_names
from agility_mlflow.pricing import Price, cost_usd, lookup_price
from agility_mlflow.prompts import Template, load_template
from agility_mlflow.recorded import recorded_outputs
from agility_mlflow.runner import Outcome, Request, Runner
from agility_mlflow.scoring import Judge, JudgedMetric, JudgeInput, Metric, get_metric, judge_rows
from agility_mlflow.scoring._deepeval import GEVAL_PREFIX
from agility_mlflow.scoring._judged import judge_metrics
from agility_mlflow.scoring.stats import mean_score, run_metrics

logger = logging.getLogger("agility_mlflow")

CONTEXT = "context"
HUMAN_SCORE = "human_score_source_llm"
INPUT_DIGEST = "input_digest"
"""The ``eval_results`` column fingerprinting what a sample gave the model and the judge (see :func:`input_digest`)."""


@dataclass(frozen=True)
class Configuration:
    """One run's worth of work: a role, a model with its inference parameters, and a prompt."""

    role: str
    name: str
    model: ModelConfig
    template: Template
    steps: tuple[PlannedStep, ...] = ()
    """A multi-step application's steps; ``template`` is then the migrated step's prompt."""

    @property
    def run_name(self) -> str:
        return self.name if self.role == "source" else f"{self.name}/{self.template.name}"


@dataclass
class Project:
    """A validated config with its dataset, templates and metrics, ready to run."""

    config: Config
    dataset: GoldenDataset
    templates: dict[str, Template]
    metrics: list[Metric | JudgedMetric]
    configurations: list[Configuration]
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Replayed models' rows of their ``path:`` files by sample id, by configuration name."""

    @property
    def judged_metrics(self) -> list[JudgedMetric]:
        return [m for m in self.metrics if isinstance(m, JudgedMetric)]


@dataclass
class EvaluationResult:
    """Per-sample rows (the ``eval_results.json`` table) and the run's aggregate metrics."""

    rows: list[dict[str, Any]]
    metrics: dict[str, float]
    outcomes: list[Outcome] = field(repr=False, default_factory=list)
    price: Price | None = None


@dataclass
class RunSummary:
    run_id: str
    role: str
    name: str
    prompt_uri: str
    metrics: dict[str, float]


def prepare(
    config: Config | str | os.PathLike[str],
    *,
    limit: int | None = None,
    candidates: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    with_source: bool = True,
) -> Project:
    """Load and cross-check everything a run needs, without calling a model or writing to MLflow.

    ``tracking_uri`` (default: the config's) is only read for ``prompts:/`` templates.
    ``with_source=False`` leaves the source run out even when the dataset has recorded answers.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    # Every check below reports into one list, so a user fixes the dataset and the config in one pass.
    problems = Problems()
    full = load_dataset(config.resolve(config.dataset.path), config.dataset.columns, problems)
    dataset = full.head(limit)
    registry = tracking_uri or config.resolved_tracking_uri()
    templates = {p.name: load_template(p.name, p.template, p.system, config.base_dir, registry, p.format) for p in config.prompts}
    required: set[str] = set()

    def require(columns: Sequence[str], why: str) -> None:
        """Each column's missing values once, under the first reason that needs it."""
        new = [column for column in columns if column not in required]
        required.update(new)
        with problems.collect():
            dataset.require(new, why)

    step_outputs = {step.prompt: _earlier_outputs(config, step.name) for step in config.steps or []}
    for template in templates.values():
        earlier = step_outputs.get(template.name, set())
        with problems.collect():
            template.check_columns(set(dataset.columns) | earlier, dataset.path.name)
        require(sorted((template.variables - earlier) & set(dataset.columns)), f"prompt '{template.name}'")
    for step in config.steps or []:
        if step.replay:
            require([step.replay], f"the replayed step '{step.name}'")
            recorded = {step.replay_latency: float, step.replay_input_tokens: int, step.replay_output_tokens: int}
            with problems.collect():
                dataset.require_numbers({column: kind for column, kind in recorded.items() if column}, f"the replayed step '{step.name}'")
    metrics = [get_metric(name) for name in config.metrics]
    for metric in metrics:
        if metric.needs_reference:
            require([GROUND_TRUTH], f"metric '{metric.name}'")
        if isinstance(metric, JudgedMetric):
            with problems.collect():
                _check_judged(config, dataset, metric)
    configurations = _plan(config, dataset, templates, candidates, with_source)
    recorded = {}
    for configuration in configurations:
        if configuration.model.provider == "replay" and configuration.name not in recorded:
            # Ids are matched against the whole file, so --limit never turns a complete join into an error.
            with problems.collect():
                recorded[configuration.name] = recorded_outputs(configuration.name, configuration.model, full if configuration.model.path else dataset,
                                                                config.base_dir)[1]
    problems.raise_if_any()
    return Project(config, dataset, templates, metrics, configurations, {k: v for k, v in recorded.items() if v is not None})


def _earlier_outputs(config: Config, step_name: str) -> set[str]:
    """The variables the steps before ``step_name`` produce."""
    names = [step.name for step in config.steps or []]
    return {step.variable for step in (config.steps or [])[: names.index(step_name)]}


def _planned_steps(config: Config, templates: dict[str, Template]) -> tuple[PlannedStep, ...]:
    from agility_mlflow.backends.replay import ReplayColumns

    planned = []
    for step in config.steps or []:
        replay = None
        if step.replay:
            replay = ReplayColumns(step.replay, step.replay_latency, None, step.replay_input_tokens, step.replay_output_tokens)
        price = lookup_price(step.model.provider, step.model.model_id, config.price_overrides()) if step.model else None
        planned.append(PlannedStep(step.name, step.variable, templates[step.prompt], replay, step.model, price))
    return tuple(planned)


def _check_judged(config: Config, dataset: GoldenDataset, metric: JudgedMetric) -> None:
    """A judged metric needs a ``judge:``, its library, and (for some) the ``context`` column: fail before any call."""
    import importlib.util

    where = f"{config.path.name}: metric '{metric.name}'"
    if config.judge is None:
        raise InputError(f"{where} needs a judge model: add a 'judge:' section (e.g. judge: {{provider: local}}, or an OpenAI or Bedrock model)")
    if metric.family in ("ragas", "deepeval") and importlib.util.find_spec(metric.family) is None:
        raise InputError(f"{where} needs {metric.family.capitalize()}: pip install 'agility-mlflow[quality]'")
    criteria = metric.name.removeprefix(GEVAL_PREFIX)
    if metric.name.startswith(GEVAL_PREFIX) and criteria not in config.judge.geval:
        raise InputError(f"{where}: add its criteria under judge.geval.{criteria}")
    if metric.needs_context:
        dataset.require([CONTEXT], f"metric '{metric.name}'")


def create_judge(project: Project, runner: Runner) -> Judge | None:
    """The project's judge (``None`` when no metric needs one), bound into its judged metrics.

    The judge's backend is built like a candidate's, so a missing key fails before any run.
    """
    import dataclasses

    from agility_mlflow.scoring._embeddings import Embedder

    cfg = project.config
    if not project.judged_metrics or cfg.judge is None:
        return None
    judge = build_judge(cfg, runner)
    embeddings = cfg.judge.embeddings
    judge.embedder = Embedder(embeddings, runner, lookup_price(embeddings.provider, embeddings.model_id, cfg.price_overrides()))
    project.metrics = [dataclasses.replace(m, judge=judge) if isinstance(m, JudgedMetric) else m for m in project.metrics]
    return judge


def build_judge(cfg: Config, runner: Runner) -> Judge:
    """The config's ``judge:`` model behind ``runner``, priced; a bad judge section is an :class:`InputError`.

    The caller closes ``judge.backend``.
    """
    assert cfg.judge is not None
    try:
        backend = create_backend(cfg.judge, cfg.run)
    except AgilityError as exc:
        raise InputError(f"{cfg.path.name}: judge: {exc}") from None
    price = lookup_price(cfg.judge.provider, cfg.judge.model_id, cfg.price_overrides())
    if price is None:
        logger.warning("no price known for judge model '%s': judge cost is reported as unknown (add it under pricing:)", cfg.judge.model_id)
    return Judge(cfg.judge, runner, backend, price, style_guide=judge_style_guide(cfg))


def judge_style_guide(cfg: Config) -> str | None:
    """The judge's style guide: a file relative to the config when one exists by that name, else the text itself."""
    text = cfg.judge.style_guide if cfg.judge else None
    if not text:
        return None
    if "\n" not in text and len(text) < 256:
        path = cfg.resolve(text)
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{cfg.path.name}: key 'judge.style_guide': {path.name} is not UTF-8 text (byte {exc.start})") from None
    return text


def warn_same_family(project: Project) -> None:
    """A judge tends to prefer answers of its own family: say so when it judges one."""
    from agility_mlflow.scoring import model_family

    judge = project.config.judge
    if judge is None or not project.judged_metrics:
        return
    family = model_family(judge.model_id)
    for configuration in project.configurations:
        if configuration.role != "source" and model_family(configuration.model.model_id) == family:
            logger.warning(
                "the judge %s is of the same model family ('%s') as candidate '%s': it may favour it; prefer a judge of another family",
                judge.model_id, family, configuration.name,
            )


def _plan(
    config: Config, dataset: GoldenDataset, templates: dict[str, Template], only: Sequence[str] | None, with_source: bool = True
) -> list[Configuration]:
    known = [c.name for c in config.candidates]
    for name in only or []:
        if name not in known:
            raise InputError(f"{config.path.name}: --candidate '{name}' is not a candidate (known: {', '.join(known)})")
    source = config.source if with_source else None
    if source is None and with_source and SOURCE_ANSWER in dataset.columns:
        source = SourceConfig(model_id="source-llm")
    plan = []
    steps = _planned_steps(config, templates)
    migrated = config.migrated_step
    # With steps, a run's prompt is the migrated step's; other prompts belong to other steps, not variants.
    default_prompts = [migrated.prompt] if migrated else list(templates)
    if source is not None:
        prompt = source.prompt or default_prompts[0]
        plan.append(Configuration("source", "source", source, templates[prompt], steps))
    for candidate in config.candidates:
        if only and candidate.name not in only:
            continue
        for prompt in candidate.prompts or default_prompts:
            plan.append(Configuration("candidate", candidate.name, candidate, templates[prompt], steps))
    return plan


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


def evaluate(
    configuration: Configuration,
    backend: Backend,
    dataset: GoldenDataset,
    metrics: Sequence[Metric],
    runner: Runner,
    pricing: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Generate answers for every sample, score them and aggregate; writes nothing to MLflow."""
    price = lookup_price(configuration.model.provider, configuration.model.model_id, pricing or {})
    outcomes, rows = score_samples(configuration, backend, dataset.rows, metrics, runner, price)
    return EvaluationResult(rows, aggregate(rows, outcomes, metrics), outcomes, price)


def score_samples(
    configuration: Configuration,
    backend: Backend,
    samples: Sequence[dict[str, Any]],
    metrics: Sequence[Metric | JudgedMetric],
    runner: Runner,
    price: Price | None,
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """The runner's outcomes for ``samples`` and one scored ``eval_results`` row per sample.

    String metrics score each answer directly; judged metrics then ask their judge, sample by
    sample in parallel, and add their reasoning, error and the judge's usage to the rows.
    """
    params = configuration.model.params.as_dict()
    if configuration.steps:
        outcomes, step_columns = run_steps(configuration.steps, backend, params, samples, runner, price, settings=runner.settings,
                                           template=configuration.template, description=configuration.run_name)
        rows = [{**_score(outcome, metrics, price), **columns} for outcome, columns in zip(outcomes, step_columns)]
    else:
        requests = [Request(row["sample_id"], configuration.template.render(row), row) for row in samples]
        outcomes = runner.run(backend, params, requests, description=configuration.run_name)
        rows = [_score(outcome, metrics, price) for outcome in outcomes]
    columns = input_columns(configuration)
    for row, sample in zip(rows, samples):
        row[INPUT_DIGEST] = input_digest(sample, columns)
    judged = [m for m in metrics if isinstance(m, JudgedMetric)]
    if judged:
        inputs = [judge_input(outcome) if outcome.generation is not None else None for outcome in outcomes]
        judge_rows(rows, inputs, judged, workers=runner.settings.concurrency)
    return outcomes, rows


def input_columns(configuration: Configuration) -> list[str]:
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


def aggregate(rows: Sequence[dict[str, Any]], outcomes: Sequence[Outcome], metrics: Sequence[Metric | JudgedMetric]) -> dict[str, float]:
    """Run-level metrics: counts, latency, tokens, cost, the mean of each quality metric, the judge's usage."""
    result = run_metrics(rows)
    result["n_cache_hits"] = float(sum(o.cached for o in outcomes))
    for metric in metrics:
        value = mean_score([row[metric.name] for row in rows if row["error"] is None])
        if value is not None:
            result[metric.name] = value
    result.update(judge_metrics(rows, [m for m in metrics if isinstance(m, JudgedMetric)]))
    result.update(step_metrics(rows, step_names(rows)))
    return result


def _score(outcome: Outcome, metrics: Sequence[Metric | JudgedMetric], price: Price | None) -> dict[str, Any]:
    generation = outcome.generation
    sample = outcome.request.sample
    refs = references(sample)
    row: dict[str, Any] = {
        "sample_id": outcome.sample_id,
        "output": generation.text if generation else None,
        "reference": refs[0] if len(refs) == 1 else (refs or None),
        "latency_s": generation.latency_s if generation else None,
        "ttft_s": generation.ttft_s if generation else None,
        "input_tokens": generation.input_tokens if generation else None,
        "output_tokens": generation.output_tokens if generation else None,
        "cost_usd": cost_usd(price, generation.input_tokens, generation.output_tokens, generation.cached_input_tokens,
                             generation.cache_write_tokens) if generation else None,
        "reasoning_tokens": generation.reasoning_tokens if generation else None,
        "cached_input_tokens": generation.cached_input_tokens if generation else None,
        "cache_write_tokens": generation.cache_write_tokens if generation else None,
        "provider_latency_s": generation.provider_latency_s if generation else None,
        "finish_reason": generation.finish_reason if generation else None,
        "cached": outcome.cached,
        "error": outcome.error,
    }
    for metric in metrics:
        if isinstance(metric, Metric):
            row[metric.name] = metric(generation.text, refs, sample) if generation else None
    return row


def run_project(
    config: Config | str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    limit: int | None = None,
    candidates: Sequence[str] | None = None,
    runner: Runner | None = None,
    parent_run_id: str | None = None,
    progress: bool | None = None,
    with_source: bool = True,
    budget_usd: float | None = None,
) -> list[RunSummary]:
    """Evaluate every configuration of a project and log each as an MLflow run.

    Args:
        config: A config path or a loaded :class:`Config`.
        tracking_uri: Overrides the config's ``tracking_uri`` and ``MLFLOW_TRACKING_URI``.
        limit: Evaluate only the first ``limit`` samples.
        candidates: Run only these candidates (the source run always runs).
        runner: A runner to reuse (its response cache and call statistics); one is built by default.
        parent_run_id: Nest the runs under this run (``mlflow run`` passes ``MLFLOW_RUN_ID``).
        progress: Show a progress bar; by default only on a terminal.
        with_source: Also log the ``source`` run (when the config or the dataset has one).
        budget_usd: Never cross this spend: a configuration whose worst case (model and judge calls)
            no longer fits in what is left is not started, and an :class:`AgilityError` says which.
    """
    from agility_mlflow import tracking

    if budget_usd is not None and budget_usd <= 0:
        raise InputError(f"--budget-usd must be positive, got {budget_usd}")
    config = config if isinstance(config, Config) else load_config(config)
    tracking.check_reachable(tracking_uri or config.resolved_tracking_uri())  # seconds, not MLflow's minutes of retries
    project = prepare(config, limit=limit, candidates=candidates, tracking_uri=tracking_uri, with_source=with_source)
    backends = create_backends(project)
    cfg = project.config
    runner = runner or Runner(cfg.run, ResponseCache(), progress=progress)
    judge = create_judge(project, runner)
    warn_same_family(project)
    experiment_id = tracking.configure(tracking_uri or cfg.resolved_tracking_uri(), cfg.experiment)
    for run_id in tracking.fail_abandoned_runs(experiment_id):
        logger.warning("run %s was left RUNNING by a process that died: marked FAILED", run_id)
    prompt_uris = {name: tracking.register_prompt(t) for name, t in project.templates.items()}
    estimates = estimate_project(project)
    total = sum(estimates, NOTHING)
    logger.info("estimate: %d runs x %d samples: %s%s", len(estimates), len(project.dataset.rows), total.describe(),
                f"; budget ${budget_usd:.4f}" if budget_usd is not None else "")

    summaries: list[RunSummary] = []
    spent = 0.0
    try:
        with tracking.parent_in_experiment(parent_run_id, experiment_id) as parent:
            for configuration, estimate in zip(project.configurations, estimates):
                if budget_usd is not None and spent + estimate.total_usd > budget_usd:
                    left = [c.run_name for c in project.configurations[len(summaries):]]
                    raise AgilityError(
                        f"--budget-usd ${budget_usd:.4f}: ${spent:.4f} spent; '{configuration.run_name}' may cost up to "
                        f"${estimate.total_usd:.4f}: not started ({len(left)} runs not started: {', '.join(left)})"
                    )
                summary = _run_configuration(project, configuration, backends[configuration.name], runner, prompt_uris, experiment_id,
                                             parent)
                summaries.append(summary)
                # A replayed model's cost was paid in production, not now; cached answers are counted as paid (a bound).
                if configuration.model.provider != "replay":
                    spent += summary.metrics.get("cost_usd_total", 0.0)
                spent += summary.metrics.get("judge_cost_usd_total", 0.0)
    finally:
        for backend in backends.values():
            backend.close()
        if judge is not None:
            judge.backend.close()
    return summaries


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
    from agility_mlflow.compare._query import finished_with_role

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


def estimate_project(project: Project) -> list[Estimate]:
    """The worst case of each configuration's evaluation (model and judge calls, USD), in plan order."""
    return [estimate_for(project, c.model, c.template, steps=c.steps) for c in project.configurations]


def estimate_for(
    project: Project, model: ModelConfig, template: Template, *, max_tokens: int | None = None, steps: Sequence[PlannedStep] = ()
) -> Estimate:
    """The worst case of evaluating ``model`` with ``template`` on the project's samples, its judged metrics included."""
    cfg = project.config
    instructions = len(judge_style_guide(cfg) or "") + len(cfg.judge.criteria or "") if cfg.judge else 0
    return estimate_evaluation(cfg, model, template, project.dataset.rows, [m.name for m in project.judged_metrics],
                               max_tokens=max_tokens, steps=steps, judge_instruction_chars=instructions)


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
        result = evaluate(configuration, backend, project.dataset, project.metrics, runner, project.config.price_overrides())
        if configuration.role == "source":
            result.metrics.update(calibrate(project, result))
        if result.price is None:
            logger.warning(
                "no price known for %s model '%s': cost is reported as unknown (add it under pricing:)",
                configuration.model.provider,
                configuration.model.model_id,
            )
        log_evaluation(project, configuration, result, run_id, prompt_uri)
        if on_result is not None:
            on_result(result, run_id)
        if result.metrics["n_errors"] == result.metrics["n_samples"]:
            first = next(row["error"] for row in result.rows if row["error"])
            raise AgilityError(f"{configuration.run_name}: every sample failed; first error: {first}")
    return RunSummary(run_id, configuration.role, configuration.name, prompt_uri, result.metrics)


def calibrate(project: Project, result: EvaluationResult) -> dict[str, float]:
    """The judge's agreement with ``human_score_source_llm`` on the source answers (empty without either).

    Only the source run answers with the answers the humans scored, so only it is calibrated.
    """
    from agility_mlflow.scoring._calibration import agreement

    if HUMAN_SCORE not in project.dataset.columns or "llm_judge" not in {m.name for m in project.judged_metrics}:
        return {}
    human = {str(row["sample_id"]): row.get(HUMAN_SCORE) for row in project.dataset.rows}
    judged = [(row["llm_judge"], human.get(str(row["sample_id"]))) for row in result.rows]
    return agreement([j for j, _ in judged], [h for _, h in judged])


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


def summary_table(summaries: Sequence[RunSummary], metric_names: Sequence[str]) -> str:
    """A fixed-width table of the runs, for the terminal."""
    columns = ["run", "prompt", "n", "errors", *metric_names, "latency_p50_s", "cost_usd_total", "run_id"]
    lines = []
    for s in summaries:
        m = s.metrics
        cells = [
            s.name if s.role == "source" else f"{s.name}",
            s.prompt_uri.removeprefix("prompts:/"),
            f"{m.get('n_samples', 0):.0f}",
            f"{m.get('n_errors', 0):.0f}",
            *[_fmt(m.get(name)) for name in metric_names],
            _fmt(m.get("latency_p50_s")),
            _fmt(m.get("cost_usd_total"), digits=6) if "cost_usd_total" in m else "unknown",
            s.run_id,
        ]
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([render(columns), *(render(cells) for cells in lines)])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


__all__ = ["Configuration", "EvaluationResult", "Project", "RunSummary", "evaluate", "evaluate_into_run", "prepare", "run_project", "summary_table"]
