"""``agility optimize``: reflective prompt evolution on one candidate, decided on samples it never saw.

Train feeds the reflection, validation picks the best prompt (GEPA's Pareto front over validation
samples), and the test split is touched once, at the end, by a normal ``candidate`` run of the best
prompt tagged ``agility.optimized_from``, so ``agility compare`` decides it against the source like
any other run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agility_mlflow import _formats
from agility_mlflow.analysis import taxonomy
from agility_mlflow.backends import Backend, create_backend
from agility_mlflow.cache import ResponseCache, default_cache_dir
from agility_mlflow.config import Config, ModelConfig, OptimizeConfig, ReflectionConfig
from agility_mlflow.errors import AgilityError, BudgetExhausted, InputError
from agility_mlflow.evaluation import (
    EvaluationSession,
    PlannedRun,
    Project,
    evaluate_into_run,
    judge_style_guide,
    prepare,
)
from agility_mlflow.optimize import _report
from agility_mlflow.optimize._adapter import COMPONENT, AgilityAdapter, Context
from agility_mlflow.optimize._budget import Budget, worst_call_usd
from agility_mlflow.optimize._objective import parse_sample_objective
from agility_mlflow.optimize._reflection import reflection_template
from agility_mlflow.optimize._split import Split, split_samples
from agility_mlflow.pricing import lookup_price
from agility_mlflow.runner import Runner
from agility_mlflow.vocabulary import EVALUATION as EVALUATION_TAG
from agility_mlflow.vocabulary import OPTIMIZATION as OPTIMIZATION_TAG
from agility_mlflow.vocabulary import OPTIMIZATION_KEY as KEY_TAG
from agility_mlflow.vocabulary import OPTIMIZED_FROM, RESUMED_FROM, ROLE, SPLIT, TEST_RUN

logger = logging.getLogger(__name__)

STATE_FILE = "agility.json"


@dataclass
class OptimizationResult:
    """What one ``agility optimize`` found and what it cost."""

    optimization_run_id: str
    best_prompt_uri: str
    seed_prompt_uri: str
    best_validation_score: float
    seed_validation_score: float
    test_run_id: str
    test_metrics: dict[str, float]
    calls: dict[str, int]
    cost_usd: float
    n_prompts: int
    n_discarded: int
    split: Split
    stopped_by_budget: bool = False
    resumed_runs: list[str] = field(default_factory=list)


def optimize_prompt(
    config: Config | str | os.PathLike[str],
    prompt: str,
    candidate: str,
    *,
    budget_usd: float | None = None,
    tracking_uri: str | None = None,
    progress: bool | None = None,
    parent_run_id: str | None = None,
) -> OptimizationResult:
    """Optimize config prompt ``prompt`` on candidate ``candidate``; evaluate the best once on the test split.

    Args:
        budget_usd: Never spend more (target, judge and reflection together, at worst-case prices until settled).
        parent_run_id: Nest the optimization and test runs under this run (``mlflow run`` passes ``MLFLOW_RUN_ID``).

    A killed optimization resumes when run again with the same config: GEPA's state is kept under
    ``AGILITY_CACHE_DIR/optimize/``, finished evaluations come from the response cache.

    Example:
        >>> result = optimize_prompt("projects/financial-qa/agility.yaml", "fin-qa", "local-smollm")  # doctest: +SKIP
        >>> result.best_prompt_uri, result.test_metrics["numeric_match"]  # doctest: +SKIP
        ('prompts:/fin-qa/4', 0.4)
    """

    project = prepare(config, candidates=[candidate], tracking_uri=tracking_uri, with_source=False)
    cfg = project.config
    settings = _check(cfg, project, prompt, candidate, budget_usd)
    configuration = PlannedRun("candidate", candidate, next(c for c in cfg.candidates if c.name == candidate), project.templates[prompt])
    objective = parse_sample_objective(settings.objective, cfg.metric_names, cfg.path.name)
    split = split_samples(project.dataset.rows, settings.split, f"{cfg.path.name}: key 'optimize.split'")
    reflection_model = _reflection_model(cfg, settings)
    key = _key(cfg, project, configuration, settings, reflection_model)
    run_dir = default_cache_dir() / "optimize" / key
    budget = Budget(run_dir / "budget.json", settings.max_calls, budget_usd)
    runner = Runner(cfg.run, ResponseCache(), progress=progress, guard=budget)
    # The session builds and closes the target, judge and reflection backends; the budget guards every call of its runner.
    with EvaluationSession(project, tracking_uri=tracking_uri, runner=runner, open_backends=True) as session:
        target = session.backend(configuration)
        reflection = session.adopt(_reflection_backend(cfg, reflection_model))
        return _optimize(session, configuration, target, reflection, reflection_model, budget, objective, split, settings, key,
                         run_dir, budget_usd, parent_run_id)


def _optimize(
    session: EvaluationSession, configuration: PlannedRun, target: Backend, reflection: Backend, reflection_model: ModelConfig,
    budget: Budget, objective: Any, split: Split, settings: OptimizeConfig, key: str, run_dir: Path, budget_usd: float | None,
    parent_run_id: str | None,
) -> OptimizationResult:
    project, runner, judge = session.project, session.runner, session.judge
    cfg = project.config
    prices = {
        "target": lookup_price(configuration.model.provider, configuration.model.model_id, cfg.price_overrides()),
        "reflection": lookup_price(reflection_model.provider, reflection_model.model_id, cfg.price_overrides()),
        "judge": judge.price if judge is not None else None,
    }
    _require_prices(cfg, prices, judge is not None, budget_usd)
    budget.register(target, "target", prices["target"])
    budget.register(reflection, "reflection", prices["reflection"])
    if judge is not None:
        budget.register(judge.backend, "judge", prices["judge"])
    test_reserve = _print_estimate(cfg, project, configuration, settings, split, budget, prices, reflection_model)
    if not cfg.run.cache:
        logger.warning("run.cache is off: a killed optimization cannot resume its finished evaluations without calls")

    experiment_id = session.open_experiment()
    state = _read_state(run_dir)
    if state.get("test_run_id"):
        return _finished(state)
    return _run(project, configuration, target, reflection, reflection_model, runner, budget, objective, split, settings,
                experiment_id, key, run_dir, state, test_reserve, parent_run_id)


def _check(cfg: Config, project: Project, prompt: str, candidate: str, budget_usd: float | None) -> OptimizeConfig:
    """Everything that can be wrong before a call: exit 2 with the key that is."""
    if cfg.optimize is None:
        raise InputError(f"{cfg.path.name}: no 'optimize:' section (see the README, 'Optimize a prompt')")
    if prompt not in project.templates:
        raise InputError(f"{cfg.path.name}: --prompt '{prompt}' is not a prompt (known: {', '.join(project.templates)})")
    if candidate not in [c.name for c in cfg.candidates]:
        raise InputError(f"{cfg.path.name}: --candidate '{candidate}' is not a candidate (known: {', '.join(c.name for c in cfg.candidates) or 'none'})")
    if next(c for c in cfg.candidates if c.name == candidate).provider == "replay":
        raise InputError(f"{cfg.path.name}: --candidate '{candidate}' replays recorded answers: a prompt cannot change them")
    if budget_usd is not None and budget_usd <= 0:
        raise InputError(f"--budget-usd must be positive, got {budget_usd}")
    if cfg.steps:
        raise InputError(f"{cfg.path.name}: optimize works on single-call applications; 'steps:' is not supported yet")
    for name in cfg.optimize.feedback or []:
        if name not in cfg.metric_names:
            raise InputError(f"{cfg.path.name}: key 'optimize.feedback': metric '{name}' is not in metrics: ({', '.join(cfg.metric_names)})")
    return cfg.optimize


def _reflection_model(cfg: Config, settings: OptimizeConfig) -> ModelConfig:
    """``optimize.reflection``, else the judge's model, else the local model."""
    if settings.reflection is not None:
        return settings.reflection
    if cfg.judge is not None:
        judge = cfg.judge.model_dump(include=set(ModelConfig.model_fields) - {"params"})
        return ReflectionConfig(**judge)
    return ReflectionConfig()


def _reflection_backend(cfg: Config, model: ModelConfig) -> Backend:
    """The reflection model's backend; missing credentials are an input error, found before any call."""
    where = f"{cfg.path.name}: key 'optimize.reflection'"
    if model.provider == "bedrock":
        import boto3
        from botocore.exceptions import BotoCoreError

        try:
            credentials = boto3.Session().get_credentials()
        except BotoCoreError as exc:
            raise InputError(f"{where}: AWS credentials for Bedrock model '{model.model_id}': {exc}") from None
        if credentials is None:
            raise InputError(f"{where}: no AWS credentials for Bedrock model '{model.model_id}' (set AWS_PROFILE or AWS_ACCESS_KEY_ID, or use an instance role)")
    try:
        return create_backend(model, cfg.run)
    except AgilityError as exc:
        raise InputError(f"{where}: {exc}") from None


def _require_prices(cfg: Config, prices: Mapping[str, Any], with_judge: bool, budget_usd: float | None) -> None:
    if budget_usd is None:
        return
    for role, price in prices.items():
        if price is None and (role != "judge" or with_judge):
            raise InputError(f"{cfg.path.name}: --budget-usd needs the {role} model's price, which is unknown: add it under pricing:")


def _key(cfg: Config, project: Project, configuration: PlannedRun, settings: OptimizeConfig, reflection: ModelConfig) -> str:
    """Names one optimization: the same config, prompt, candidate and data resume the same GEPA state."""
    material = {
        "experiment": cfg.experiment,
        "tracking": cfg.resolved_tracking_uri() or "",
        "dataset": project.dataset.digest,
        "prompt": [configuration.template.name, configuration.template.user, configuration.template.system, configuration.template.format],
        "candidate": configuration.model.model_dump(mode="json", exclude={"api_key"}),
        "optimize": settings.model_dump(mode="json"),
        "reflection": reflection.model_dump(mode="json", exclude={"api_key"}),
        "metrics": list(cfg.metric_names),
        "judge": cfg.judge.model_dump(mode="json", exclude={"api_key"}) if cfg.judge else None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _calls_per_sample(project: Project) -> int:
    """Worst-case calls to score one sample: the answer, then each judged metric's attempts (Ragas may need more)."""
    judge = project.config.judge
    return 1 + sum(judge.max_attempts if judge else 1 for _ in project.judged_metrics)


def _print_estimate(
    cfg: Config, project: Project, configuration: PlannedRun, settings: OptimizeConfig, split: Split, budget: Budget,
    prices: Mapping[str, Any], reflection: ModelConfig,
) -> int:
    """Log the plan (calls, USD) before the first call; return the calls held back for the final test run."""
    per_sample = _calls_per_sample(project)
    test_reserve = len(split.test) * per_sample
    seed_validation = len(split.validation) * per_sample
    where = f"{cfg.path.name}: key 'optimize.max_calls'"
    if settings.max_calls < test_reserve + seed_validation + settings.minibatch * per_sample + 1:
        raise InputError(
            f"{where}: {settings.max_calls} is too small: the starting prompt on validation ({seed_validation}), one proposal "
            f"({settings.minibatch * per_sample + 1}) and the final test run ({test_reserve}) need up to "
            f"{seed_validation + settings.minibatch * per_sample + 1 + test_reserve} calls"
        )
    rows = project.dataset.rows
    worst_target = max(worst_call_usd(prices["target"], configuration.model.params.as_dict(), configuration.template.render(r)) for r in rows)
    worst_reflection = worst_call_usd(prices["reflection"], reflection.params.as_dict(), [{"role": "user", "content": "x" * 12000}])
    worst_judge = max(worst_target, 0.0) if prices["judge"] is None else worst_call_usd(prices["judge"], cfg.judge.params.as_dict() if cfg.judge else {}, [{"role": "user", "content": "x" * 6000}])
    worst = max(worst_target, worst_reflection, worst_judge) * settings.max_calls
    spent = f"; {budget.total_calls} calls already made (resuming)" if budget.total_calls else ""
    logger.info(
        "optimize: split %s samples (train/validation/test, seed %d); up to %d calls in all (%d held for the final test run, "
        "%d per sample scored); at most $%.4f at worst-case prices%s%s",
        split.sizes(), settings.split.seed, settings.max_calls, test_reserve, per_sample, worst,
        f"; --budget-usd ${budget.max_usd:.4f}" if budget.max_usd is not None else "", spent,
    )
    return test_reserve


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(tmp, run_dir / STATE_FILE)


def _finished(state: Mapping[str, Any]) -> OptimizationResult:
    logger.info("optimize: this optimization already finished (run %s): nothing to do", state["optimization_run_id"])
    saved = dict(state["result"])
    saved["split"] = Split(**{name: tuple(ids) for name, ids in saved["split"].items()})
    return OptimizationResult(**saved)


def _run(
    project: Project, configuration: PlannedRun, target: Backend, reflection: Backend, reflection_model: ModelConfig,
    runner: Runner, budget: Budget, objective: Any, split: Split, settings: OptimizeConfig, experiment_id: str, key: str,
    run_dir: Path, state: dict[str, Any], test_reserve: int, parent_run_id: str | None,
) -> OptimizationResult:
    from gepa.api import optimize as gepa_optimize

    from agility_mlflow import tracking

    cfg = project.config
    source = configuration.template
    registry_name = source.registry_name
    previous = list(state.get("optimization_runs", []))
    rows = {str(r["sample_id"]): r for r in project.dataset.rows}
    trial_project = dataclasses.replace(project, config=cfg.model_copy(update={"run": cfg.run.model_copy(update={"traces": False})}))
    tags = {tracking.ROLE: "optimization", tracking.CANDIDATE: configuration.name, KEY_TAG: key}
    if previous:
        tags[RESUMED_FROM] = previous[-1]
    seed_uri = tracking.register_prompt(dataclasses.replace(source, name=registry_name))
    name = f"optimize/{configuration.name}/{source.name}"
    # Only the user message evolves: the system message keeps its own placeholders.
    variables = tuple(sorted(_formats.fields(source.user, source.format)))
    stopped_by_budget = False
    with tracking.evaluation_run(experiment_id, name, tags, prompt_uri=seed_uri, parent_run_id=parent_run_id) as run_id:
        _write_state(run_dir, {**state, "optimization_runs": [*previous, run_id]})
        tracking.log_run_data(run_id, {**_params(cfg, configuration, settings, split, reflection_model, seed_uri, budget),
                                       "dataset_digest": project.dataset.digest}, {})
        context = Context(
            trial_project, configuration, target, runner, budget, objective, registry_name, variables,
            frozenset(split.validation), frozenset(split.test), experiment_id, run_id, key,
            tuple(settings.feedback or cfg.metric_names), reflection, reflection_model,
            reflection_template(variables, _criteria(cfg, settings), source.format),
            categories=taxonomy(cfg.analysis.categories), analysis_seed=cfg.analysis.seed,
            logged=_logged_evaluations(experiment_id, key),
        )
        adapter = AgilityAdapter(context)
        adapter.register(source.user, None)
        progress = _report.Progress(run_id, adapter, budget)
        budget.call_limit = settings.max_calls - test_reserve
        multi = len(objective.weights) > 1
        try:
            gepa_optimize(
                seed_candidate={COMPONENT: source.user},
                trainset=[rows[i] for i in split.train],
                valset=[rows[i] for i in split.validation],
                # GEPA's Protocol declares propose_new_texts a settable attribute; the adapter defines it as a method.
                adapter=adapter,  # type: ignore[arg-type]
                candidate_selection_strategy="pareto",
                frontier_type="hybrid" if multi else "instance",
                skip_perfect_score=objective.perfect is not None,
                perfect_score=objective.perfect if objective.perfect is not None else 1.0,
                reflection_minibatch_size=min(settings.minibatch, len(split.train)),
                # agility's budget counts model calls; GEPA's own count (samples scored, cached or not) only bounds the loop.
                max_metric_calls=4 * settings.max_calls,
                stop_callbacks=[_Stop(budget)],
                run_dir=str(run_dir / "gepa"),
                seed=settings.seed,
                # GEPA calls a callback's hook only when it has one (getattr); its Protocol lists every hook.
                callbacks=[progress],  # type: ignore[list-item]
                logger=_GepaLog(),
                raise_on_exception=True,
                display_progress_bar=False,
            )
        except BudgetExhausted as exc:
            stopped_by_budget = True
            logger.info("optimize: %s: the best prompt so far goes to the test run", exc)
        if budget.refused or budget.total_calls >= budget.call_limit:
            stopped_by_budget = True
        gepa_result = _report.load_result(run_dir / "gepa")
        summary = _report.summarize(gepa_result, adapter, run_id, budget)
        tracking.log_run_data(run_id, {}, summary.metrics)
        _report.log_artifacts(run_id, gepa_result, adapter, summary)

    best_uri = summary.best_uri
    budget.call_limit = settings.max_calls
    best = dataclasses.replace(configuration, role="candidate", template=adapter.template(adapter.prompts[best_uri].text))
    test_project = dataclasses.replace(project, dataset=project.dataset.subset(split.test))
    test = evaluate_into_run(
        test_project, best, target, runner, best_uri, experiment_id, parent_run_id=parent_run_id,
        run_name=f"{configuration.name}/{source.name}@optimized", tags={OPTIMIZED_FROM: run_id, SPLIT: "test"},
    )
    tracking.set_prompt_version_tags(best_uri, {TEST_RUN: test.run_id, OPTIMIZED_FROM: run_id})
    tracking.log_run_data(run_id, {"test_run_id": test.run_id}, {
        "calls_total": float(budget.total_calls), "cost_usd_total": budget.usd,
        **{f"test_{k}": v for k, v in test.metrics.items() if k in cfg.metric_names},
    })
    result = OptimizationResult(
        run_id, best_uri, seed_uri, summary.best_validation, summary.seed_validation, test.run_id, test.metrics,
        dict(budget.calls), budget.usd, summary.n_prompts, len(adapter.discarded), split, stopped_by_budget, previous,
    )
    _write_state(run_dir, {"optimization_runs": [*previous, run_id], "optimization_run_id": run_id, "test_run_id": test.run_id,
                           "result": dataclasses.asdict(result)})
    return result


class _GepaLog:
    """GEPA's progress lines go to this module's logger (debug), never to stdout."""

    def log(self, message: str) -> None:
        logger.debug("gepa: %s", message)


class _Stop:
    """Stop GEPA when the call budget is spent, or when iterations stop making calls (everything left is cached:
    the same reflection inputs would give the same proposals again)."""

    def __init__(self, budget: Budget, patience: int = 4) -> None:
        self.budget = budget
        self.patience = patience
        self.calls_at: dict[int, int] = {}

    def __call__(self, gepa_state: Any) -> bool:
        state = gepa_state
        if self.budget.refused or self.budget.total_calls >= self.budget.call_limit:
            return True
        self.calls_at.setdefault(state.i, self.budget.total_calls)  # calls made before iteration state.i + 1 started
        earlier = self.calls_at.get(state.i - self.patience)
        return earlier is not None and earlier == self.budget.total_calls


def _criteria(cfg: Config, settings: OptimizeConfig) -> str | None:
    """``optimize.criteria`` (a file relative to the config, or text), else the judge's style guide."""
    text = settings.criteria
    if not text:
        return judge_style_guide(cfg)
    if "\n" not in text and len(text) < 256 and cfg.resolve(text).is_file():
        return cfg.resolve(text).read_text(encoding="utf-8")
    return text


def _params(cfg: Config, configuration: PlannedRun, settings: OptimizeConfig, split: Split, reflection: ModelConfig,
            seed_uri: str, budget: Budget) -> dict[str, Any]:
    return {
        "optimizer": "gepa",
        "provider": configuration.model.provider,
        "model_id": configuration.model.model_id,
        "seed_prompt": seed_uri,
        "objective": json.dumps(settings.objective) if settings.objective is not None else cfg.metric_names[0],
        "split": split.sizes(),
        "split_seed": settings.split.seed,
        "stratify": settings.split.stratify or "",
        "max_calls": settings.max_calls,
        "budget_usd": budget.max_usd if budget.max_usd is not None else "",
        "reflection_provider": reflection.provider,
        "reflection_model_id": reflection.model_id,
        "minibatch": settings.minibatch,
        "seed": settings.seed,
    }


def _logged_evaluations(experiment_id: str, key: str) -> dict[str, str]:
    """Evaluations of this optimization already logged as FINISHED trial runs (by this or a killed process)."""
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}' and tags.`{ROLE}` = 'trial' and attributes.status = 'FINISHED'",
        max_results=5000,
    )
    return {run.data.tags[EVALUATION_TAG]: run.info.run_id for run in runs if EVALUATION_TAG in run.data.tags}


__all__ = ["OPTIMIZATION_TAG", "OptimizationResult", "optimize_prompt"]
