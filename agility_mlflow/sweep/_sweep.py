"""``agility sweep``: an Optuna study whose every trial is one evaluated, logged configuration."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from agility_mlflow.config import CandidateConfig, Config, SweepConfig, load_config
from agility_mlflow.errors import AgilityError, InputError
from agility_mlflow.estimate import NOTHING, Estimate
from agility_mlflow.evaluation import (
    EvaluationResult,
    EvaluationSession,
    PlannedRun,
    Project,
    combine,
    estimate_for,
    prepare,
)
from agility_mlflow.prompts import Template, template_from_registry
from agility_mlflow.runner import Runner
from agility_mlflow.sweep import _report, _space, _study
from agility_mlflow.sweep._objectives import Constraint, Objective, parse_constraint, parse_objective
from agility_mlflow.vocabulary import FEASIBLE
from agility_mlflow.vocabulary import STUDY as STUDY_TAG
from agility_mlflow.vocabulary import TRIAL as TRIAL_TAG

logger = logging.getLogger(__name__)


class PrunedTrial(optuna.TrialPruned):
    """A trial stopped early by the pruner; its MLflow run ends KILLED (a partial result is never FINISHED)."""

    run_status = "KILLED"


@dataclass
class SweepResult:
    study_name: str
    storage: str
    parent_run_id: str
    n_trials: int
    best: list[FrozenTrial] = field(default_factory=list)
    stopped_by_budget: bool = False
    source_run_id: str | None = None
    """The source run the trials are compared with (``None`` without recorded answers)."""


@dataclass
class _Plan:
    """Everything a trial needs, resolved once per worker."""

    session: EvaluationSession
    sweep: SweepConfig
    objective: Objective
    constraints: list[Constraint]
    candidates: dict[str, CandidateConfig]
    templates: dict[str, Template]
    source_metrics: dict[str, float] | None
    parent_run_id: str
    study_name: str
    total_trials: int = 0
    budget_usd: float | None = None
    reserve_usd: float = 0.0
    """The most one trial may cost (model and judge calls): reserved in the study before it runs."""
    stopped_by_budget: bool = False

    @property
    def project(self) -> Project:
        return self.session.project


def run_sweep(
    config: Config | str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    budget_usd: float | None = None,
    limit: int | None = None,
    runner: Runner | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Search prompt variants, models and inference parameters; log each trial as a child MLflow run.

    Several processes (on one or many machines) given the same ``storage`` and ``study_name`` share
    one study; a killed sweep resumes where it stopped when run again. The source model's run is
    logged too (or an identical one reused), so ``agility compare`` can decide the trials right after.
    ``limit`` evaluates only the first ``limit`` samples.

    Example:
        >>> result = run_sweep("projects/financial-qa/agility.yaml", n_trials=10)  # doctest: +SKIP
        >>> result.best[0].params  # doctest: +SKIP
        {'candidate': 'local-smollm', 'prompt': 'fin-qa-concise', 'instruction': '', 'temperature': 0.0}
    """
    from agility_mlflow import tracking

    config = config if isinstance(config, Config) else load_config(config)
    tracking.check_reachable(tracking_uri or config.resolved_tracking_uri())  # seconds, not MLflow's minutes of retries
    project = prepare(config, tracking_uri=tracking_uri, limit=limit)
    cfg = project.config
    if cfg.sweep is None:
        raise InputError(f"{cfg.path.name}: no 'sweep:' section to run")
    if budget_usd is not None and budget_usd <= 0:
        raise InputError(f"--budget-usd must be positive, got {budget_usd}")
    sweep = cfg.sweep
    total_trials = n_trials or sweep.n_trials
    objective = parse_objective(sweep.objective, cfg.metric_names)
    constraints = [parse_constraint(text, i) for i, text in enumerate(sweep.constraints)]
    # Recorded outputs do not change with parameters: replay candidates are compared, never searched.
    candidates = {c.name: c for c in cfg.candidates if (c.name in sweep.candidates if sweep.candidates else c.provider != "replay")}
    uri = tracking_uri or cfg.resolved_tracking_uri()
    with EvaluationSession(project, tracking_uri=tracking_uri, runner=runner, progress=progress) as session:
        experiment_id = session.experiment_id
        templates = _templates(project, sweep)

        study_name = study_name or sweep.study or f"{cfg.experiment}-sweep"
        storage_url = storage or sweep.storage or _study.default_storage(uri or _current_tracking_uri())
        search_space = _space.grid(sweep, list(candidates), list(templates)) if sweep.sampler == "grid" else None
        if search_space is not None:
            total_trials = min(total_trials, _space.size(search_space))
        study = _study.open_study(
            study_name, storage_url, sweep, objective.directions, _constraint_values if constraints else None, search_space
        )
        for number in _study.fail_dead_trials(study):
            logger.warning("trial %d was left RUNNING by a worker that died: marked FAIL", number)
        _fail_runs_of_failed_trials(study)

        # Workers starting together would each log the source run: the first logs it, the others wait and reuse it.
        source_run_id = _study.first_worker_first(study, _source_key(project), session.source_run)
        source_metrics = None
        if any(c.uses_source for c in constraints):
            if source_run_id is None:
                raise InputError("sweep.constraints: a constraint refers to 'source' but the config has no source model")
            source_metrics = dict(MlflowClient().get_run(source_run_id).data.metrics)
        parent_run_id = _report.parent_run(experiment_id, study_name, storage_url, sweep, objective, total_trials)
        plan = _Plan(session, sweep, objective, constraints, candidates, templates, source_metrics, parent_run_id, study_name,
                     total_trials, budget_usd)
        plan.reserve_usd = _log_estimate(plan).total_usd

        remaining = _study.trials_to_ask(study, total_trials)

        def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
            # Saves asking for a trial that would only be refused; the claim in each trial is what makes caps exact.
            trials = study.get_trials(deepcopy=False)
            if sum(_study.holds_place(t) for t in trials) >= total_trials:
                study.stop()
            elif budget_usd is not None and _study.committed_usd(trials, plan.reserve_usd) + plan.reserve_usd > budget_usd:
                _stop_for_budget(plan, study, _budget_message(plan, _study.committed_usd(trials, plan.reserve_usd)))

        committed = _study.committed_usd(study.get_trials(deepcopy=False), plan.reserve_usd)
        if budget_usd is not None and committed + plan.reserve_usd > budget_usd:
            remaining = 0
            _stop_for_budget(plan, None, _budget_message(plan, committed))
        logging.getLogger("optuna.study._optimize").addFilter(_quiet_refused_claims)
        if remaining:
            study.optimize(
                lambda trial: _run_trial(plan, study, trial),
                n_trials=remaining,
                callbacks=[stop_when_done],
                catch=(AgilityError, KeyError, _study.ClaimRefused),
            )
    best = _report.summarize(study, objective, parent_run_id)
    n_trials = sum(not _study.refused(t) for t in study.get_trials(deepcopy=False))
    return SweepResult(study_name, storage_url, parent_run_id, n_trials, best, plan.stopped_by_budget, source_run_id)


def _budget_message(plan: _Plan, committed: float) -> str:
    return f"${committed:.4f} spent or reserved; a trial may cost up to ${plan.reserve_usd:.4f}, over the budget of ${plan.budget_usd:.4f}"


def _stop_for_budget(plan: _Plan, study: optuna.Study | None, message: str) -> None:
    """Log why once; stop the study's loop when inside it (``None`` before it starts)."""
    if not plan.stopped_by_budget:
        logger.warning("budget: %s: no further trial", message)
    plan.stopped_by_budget = True
    if study is not None:
        study.stop()


def _quiet_refused_claims(record: logging.LogRecord) -> bool:
    """Optuna reports a trial refused its place as failed; it never ran, so say nothing (the worker logs why it stops)."""
    return "ClaimRefused" not in record.getMessage()


def _source_key(project: Project) -> str:
    """The study attribute that orders the workers logging this dataset's source run (its identity, hashed)."""
    import hashlib

    source = next((c for c in project.configurations if c.role == "source"), None)
    identity = [project.dataset.digest, len(project.dataset.rows), sorted(m.name for m in project.metrics)]
    if source is not None:
        identity += [source.model.provider, source.model.model_id, source.template.registry_template()]
    return "agility.source_run." + hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:16]


def _current_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _templates(project: Project, sweep: SweepConfig) -> dict[str, Template]:
    """Config prompts by name, plus registry prompts by URI."""

    migrated = project.config.migrated_step
    # With steps:, the prompts to vary are the migrated step's; the others belong to fixed steps.
    keys = sweep.prompts or ([migrated.prompt] if migrated else list(project.templates))
    templates: dict[str, Template] = {}
    for key in keys:
        if key in project.templates:
            templates[key] = project.templates[key]
            continue
        try:
            template = template_from_registry(key)
        except InputError as exc:
            raise InputError(f"sweep.prompts: {exc}") from None
        template.check_columns(project.dataset.columns, project.dataset.path.name)
        project.dataset.require(sorted(template.variables), f"prompt '{key}'")
        templates[key] = template
    return templates


def _constraint_values(trial: FrozenTrial) -> Sequence[float]:
    return trial.user_attrs.get(_study.CONSTRAINTS_ATTR, [1.0])


def _log_estimate(plan: _Plan) -> Estimate:
    """Log what the sweep may call and cost before its first call; return the worst case of one trial."""
    project = plan.project
    space_max_tokens = max([int(v) for v in _space_values(plan.sweep, "max_tokens")], default=0)
    worst = NOTHING
    for candidate in plan.candidates.values():
        for template in plan.templates.values():
            estimate = estimate_for(project, candidate, template, max_tokens=space_max_tokens)
            worst = max(worst, estimate, key=lambda e: (e.total_usd, e.model_calls + e.judge_calls))
    total = plan.total_trials
    logger.info("estimate: up to %d trials x %d samples; per trial %s; $%.4f in all (cache hits are free)%s",
                total, len(project.dataset.rows), worst.describe(), worst.total_usd * total,
                f"; budget ${plan.budget_usd:.4f}" if plan.budget_usd is not None else "")
    return worst


def _space_values(sweep: SweepConfig, name: str) -> list[Any]:
    spec = sweep.params.get(name)
    if spec is None:
        return []
    return list(spec.choices) if hasattr(spec, "choices") else [spec.high]


def _run_trial(plan: _Plan, study: optuna.Study, trial: optuna.Trial) -> Sequence[float] | float:
    from agility_mlflow import tracking

    _study.mark_worker(study, trial)
    claim = _study.claim(study, trial, total_trials=plan.total_trials, reserve_usd=plan.reserve_usd, budget_usd=plan.budget_usd)
    if claim.refused == "budget":
        _stop_for_budget(plan, study, claim.message)
    elif claim.refused:
        logger.info("trial %d not run: %s; this worker stops", trial.number, claim.message)
        study.stop()
    if claim.refused:
        raise _study.ClaimRefused(claim.message)
    choice = _space.suggest(trial, plan.sweep, plan.candidates, plan.templates)
    steps = plan.project.configurations[0].steps if plan.project.configurations else ()  # a pipeline's steps, as `agility run` plans them
    configuration = PlannedRun("trial", choice.candidate.name, choice.candidate, choice.template, steps)
    prompt_uri = tracking.register_prompt(choice.template)
    tags = {tracking.ROLE: "trial", tracking.CANDIDATE: choice.candidate.name, STUDY_TAG: plan.study_name, TRIAL_TAG: str(trial.number)}
    run_name = _space.trial_name(choice, prompt_uri, _space.varying(plan.sweep), trial.number)
    with plan.session.run(run_name, tags, prompt_uri=prompt_uri, parent_run_id=plan.parent_run_id) as run_id:
        trial.set_user_attr(_study.RUN_ATTR, run_id)
        result, pruned_at = _evaluate_in_slices(plan, configuration, trial)
        plan.session.log(configuration, result, run_id, prompt_uri)
        spent = sum(row["cost_usd"] or 0.0 for row in result.rows if not row["cached"])
        # The judge's cost counts against the budget too (all of it: a cached verdict is counted as if paid).
        spent += sum(row.get("judge_cost_usd") or 0.0 for row in result.rows)
        trial.set_user_attr(_study.SPENT_ATTR, spent)
        if pruned_at is not None:
            raise PrunedTrial(f"pruned after slice {pruned_at + 1} of {plan.sweep.slices}")
        values = plan.objective.values(result.metrics)
        violations = [c.violation(result.metrics, plan.source_metrics) for c in plan.constraints]
        trial.set_user_attr(_study.CONSTRAINTS_ATTR, violations)
        if any(v > 0 for v in violations):
            tracking.set_tags(run_id, {FEASIBLE: "false"})
    return values if plan.objective.is_multi else values[0]


def _evaluate_in_slices(plan: _Plan, configuration: PlannedRun, trial: optuna.Trial) -> tuple[EvaluationResult, int | None]:
    """Evaluate slice by slice, reporting the running objective so the pruner can stop a hopeless trial."""
    rows_all = plan.project.dataset.rows
    # A batch candidate's trial is one job: slices would be jobs each (under a provider's minimum, and hours apart).
    size = len(rows_all) if configuration.model.mode == "batch" else math.ceil(len(rows_all) / plan.sweep.slices)
    parts: list[EvaluationResult] = []
    for step, start in enumerate(range(0, len(rows_all), size)):
        parts.append(plan.session.evaluate(configuration, rows_all[start : start + size]))
        if plan.objective.is_multi or start + size >= len(rows_all):
            continue
        so_far = combine(parts, plan.project.metrics)
        trial.report(plan.objective.values(so_far.metrics)[0], step)
        if trial.should_prune():
            return so_far, step
    return combine(parts, plan.project.metrics), None


def _fail_runs_of_failed_trials(study: optuna.Study) -> None:
    """MLflow runs of trials Optuna failed (a dead worker elsewhere) must not stay RUNNING."""
    from agility_mlflow import tracking

    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get(_study.RUN_ATTR)
        if run_id:
            tracking.fail_if_running(run_id, "interrupted: its Optuna trial failed (worker gone)")

