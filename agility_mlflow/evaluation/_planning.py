"""Planning before any call: load and cross-check a project, list its configurations, estimate their worst case."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.backends import check_batch_size
from agility_mlflow.config import Config, ModelConfig, SourceConfig, load_config
from agility_mlflow.dataset import GROUND_TRUTH, SOURCE_ANSWER, GoldenDataset, load_dataset
from agility_mlflow.errors import InputError, Problems
from agility_mlflow.estimate import Estimate, estimate_evaluation
from agility_mlflow.evaluation._entities import CONTEXT, PlannedRun, Project
from agility_mlflow.evaluation._judging import judge_style_guide
from agility_mlflow.pipeline import PlannedStep
from agility_mlflow.pricing import lookup_price
from agility_mlflow.prompts import Template, load_template
from agility_mlflow.recorded import recorded_outputs
from agility_mlflow.scoring import GEVAL_PREFIX, Scorer, get_metric


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
            kinds = {step.replay_latency: float, step.replay_input_tokens: int, step.replay_output_tokens: int}
            with problems.collect():
                dataset.require_numbers({column: kind for column, kind in kinds.items() if column}, f"the replayed step '{step.name}'")
    metrics = [get_metric(name) for name in config.metric_names]
    for metric in metrics:
        if metric.needs_reference:
            require([GROUND_TRUTH], f"metric '{metric.name}'")
        if metric.needs_judge:
            with problems.collect():
                _check_judged(config, dataset, metric)
    configurations = _plan(config, dataset, templates, candidates, with_source)
    for configuration in {c.name: c for c in configurations if c.model.mode == "batch"}.values():
        with problems.collect():  # a provider's minimum batch size and quotas: refused before any upload
            try:
                check_batch_size(configuration.model, len(dataset.rows))
            except InputError as exc:
                raise InputError(f"{config.path.name}: candidate '{configuration.name}': {exc}") from None
    recorded: dict[str, dict[str, Mapping[str, Any]] | None] = {}
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


def _check_judged(config: Config, dataset: GoldenDataset, metric: Scorer) -> None:
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


def _plan(
    config: Config, dataset: GoldenDataset, templates: dict[str, Template], only: Sequence[str] | None, with_source: bool = True
) -> list[PlannedRun]:
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
        plan.append(PlannedRun("source", "source", source, templates[prompt], steps))
    for candidate in config.candidates:
        if only and candidate.name not in only:
            continue
        for prompt in candidate.prompts or default_prompts:
            plan.append(PlannedRun("candidate", candidate.name, candidate, templates[prompt], steps))
    return plan


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
