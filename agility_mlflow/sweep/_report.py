"""The study's parent run: settings, the best (or Pareto) trials tagged, and Optuna's plots."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from agility_mlflow.config import SweepConfig
from agility_mlflow.sweep import _study
from agility_mlflow.sweep._objectives import Objective
from agility_mlflow.vocabulary import BEST as BEST_TAG
from agility_mlflow.vocabulary import BEST_PARAMS, BEST_RUN_IDS, BEST_TRIAL, STUDY


def parent_run(experiment_id: str, study_name: str, storage_url: str, sweep: SweepConfig, objective: Objective, n_trials: int) -> str:
    """The study's parent run, created once and shared by every worker and every resume.

    It is closed (FINISHED) as soon as it holds the settings, so no crash can leave it RUNNING;
    trials attach to it as children and :func:`summarize` updates it after each worker's search.
    """
    from mlflow import MlflowClient

    from agility_mlflow import tracking

    client = MlflowClient()

    def first() -> str | None:
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{tracking.ROLE}` = 'study' and tags.`{STUDY}` = '{study_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    existing = first()
    if existing:
        return existing
    run = client.create_run(experiment_id, run_name=f"study/{study_name}", tags={tracking.ROLE: "study", STUDY: study_name})
    earliest = first()
    if earliest != run.info.run_id:  # another worker created one at the same moment: all share the earliest
        client.delete_run(run.info.run_id)
        return str(earliest)
    params = {
        "study_name": study_name,
        "storage": _hide_password(storage_url),
        "sampler": sweep.sampler,
        "pruner": sweep.pruner,
        "slices": sweep.slices,
        "n_trials": n_trials,
        "seed": sweep.seed,
        "objective": list(objective.metrics),
        "directions": list(objective.directions),
        "weights": list(objective.weights) if objective.weights else None,
        "constraints": sweep.constraints,
        "search_params": {k: v.model_dump() for k, v in sweep.params.items()},
        "instructions": sweep.instructions,
    }
    tracking.log_run_data(run.info.run_id, {k: v for k, v in params.items() if v not in (None, [], {})}, {})
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: nothing to hide, but do not echo it either
        return "<unparsed storage url>"


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible trial (one objective) or the feasible Pareto front (several).

    A configuration tried more than once (a sampler may propose it again) is on the front once, as its
    first trial.
    """
    feasible = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(v <= 0 for v in t.user_attrs.get(_study.CONSTRAINTS_ATTR, []))
    ]
    if not feasible:
        return []
    if len(study.directions) == 1:
        sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
        return [max(feasible, key=lambda t: (sign * _value(t), -t.number))]
    front = [t for t in feasible if not any(_dominates(o, t, study.directions) for o in feasible)]
    once: dict[str, FrozenTrial] = {}
    for trial in sorted(front, key=lambda t: t.number):
        once.setdefault(repr(sorted(trial.params.items())), trial)
    return list(once.values())


def _value(trial: FrozenTrial) -> float:
    """A completed single-objective trial's value (Optuna sets it when the trial completes)."""
    assert trial.value is not None
    return trial.value


def _dominates(a: FrozenTrial, b: FrozenTrial, directions: list[optuna.study.StudyDirection]) -> bool:
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in directions]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(signs, a.values, b.values))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(signs, a.values, b.values))


def summarize(study: optuna.Study, objective: Objective, parent_run_id: str) -> list[FrozenTrial]:
    """Tag the best trials' runs, record them on the parent run, and log the study's plots and table."""
    from agility_mlflow import tracking

    best = best_trials(study)
    best_ids: set[str] = {run for t in best if (run := t.user_attrs.get(_study.RUN_ATTR)) is not None}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = trial.user_attrs.get(_study.RUN_ATTR)
        if run_id:
            tracking.set_tags(run_id, {BEST_TAG: str(run_id in best_ids).lower()})
    states = [t.state for t in study.trials]
    metrics = {f"n_trials_{s.name.lower()}": float(states.count(s)) for s in TrialState}
    tags: dict[str, str] = {BEST_RUN_IDS: ",".join(sorted(best_ids)) or "none"}
    if len(best) == 1:
        if not objective.is_multi:  # a front of one still has one value per objective, each logged on its run
            metrics["best_value"] = float(_value(best[0]))
        tags[BEST_TRIAL] = str(best[0].number)
        tags[BEST_PARAMS] = str(best[0].params)
    importances = _importances(study, objective)
    metrics.update({f"param_importance.{name}": value for name, value in importances.items()})
    tracking.log_run_data(parent_run_id, {}, metrics)
    tracking.set_tags(parent_run_id, tags)
    frame = study.trials_dataframe(attrs=("number", "values", "params", "state", "user_attrs", "duration"))
    tracking.log_results_table(parent_run_id, frame.astype(str).to_dict("records"), artifact_file="trials.json")
    for name, figure in _plots(study, objective, list(importances)):
        tracking.log_figure(parent_run_id, figure, f"plots/{name}.png")
    return best


def _varied(study: optuna.Study) -> list[str]:
    """Search parameters that took more than one value among the completed trials, in the study's order.

    A single-choice parameter (one candidate, one instruction) is no dimension: Optuna's importance
    evaluator would share the importance out evenly over it too.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = dict.fromkeys(name for trial in complete for name in trial.params)
    return [name for name in names if len({repr(trial.params.get(name)) for trial in complete}) > 1]


def _importances(study: optuna.Study, objective: Objective) -> dict[str, float]:
    """Optuna's parameter importances for the (first) objective over the varied parameters; empty when undefined."""
    varied = _varied(study)
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3 or not varied:
        return {}
    target = None if not objective.is_multi else (lambda t: t.values[0])
    try:
        return dict(optuna.importance.get_param_importances(study, params=varied, target=target))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # importances need variation in the objective's values too


def _plots(study: optuna.Study, objective: Objective, important: list[str]) -> list[tuple[str, Any]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        if not complete:
            return []
        if objective.is_multi and len(objective.metrics) in (2, 3):
            figures.append(("pareto_front", plots.plot_pareto_front(study, target_names=list(objective.metrics)).figure))
        elif not objective.is_multi:
            figures.append(("optimization_history", plots.plot_optimization_history(study).figure))
        if important:
            target = None if not objective.is_multi else (lambda t: t.values[0])
            axes = plots.plot_param_importances(study, params=important, target=target,
                                                target_name="weighted score" if objective.weights else objective.metrics[0])
            figure = axes.figure
            if isinstance(figure, Figure):  # Optuna draws on a figure of its own, never a subfigure
                figure.set_size_inches(8, 1.5 + 0.5 * len(important))
                figure.tight_layout()  # the parameter names on the left stay whole
            figures.append(("param_importances", figure))
    return figures
