"""``agility check``: re-evaluate a registered model on a (refreshed) dataset; a CI gate.

It fails when a ``--min METRIC=VALUE`` threshold is not met, when more samples fail than the
registered error limit allows, or when a registered score can no longer be shown non-inferior: the
bootstrap interval of the per-sample difference to the registered run (pair by pair on the samples
it also answered and that did not change since, against its mean on new and changed ones) must stay
within the margin recorded at registration, as ``agility compare`` requires of a candidate.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agility_mlflow.config import DecisionConfig
from agility_mlflow.errors import InputError
from agility_mlflow.registry._served import check_sections
from agility_mlflow.vocabulary import (
    CHECK,
    CHECK_MODEL,
    CHECK_REASONS,
    CHECK_VERSION,
    CONFIDENCE,
    DATASET_COLUMNS,
    EXPERIMENT,
    INPUT_DIGEST,
    JUDGE,
    MARGINS,
    MAX_ERROR_RATE,
    METRICS,
    REGISTERED_FROM,
    score_key,
)

logger = logging.getLogger(__name__)



@dataclass
class CheckResult:
    """The outcome of ``agility check``.

    Attributes:
        passed: Every threshold, the error limit and every registered score held.
        run_id: The check run (``agility.role = check``, ``agility.check = pass|fail``).
        metrics: The check run's metrics.
        reasons: One line per threshold and registered score, e.g.
            ``token_f1 -0.008 [-0.051, 0.034] on 36 samples paired with the registered run: within margin 0.05``.
    """

    passed: bool
    run_id: str
    metrics: dict[str, float]
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RegisteredScores:
    """What a model version was registered with: its scores and the rule that holds them.

    Attributes:
        run_id: The evaluated run that was registered.
        scores: Metric name to the run's mean score.
        margins: Metric name to its non-inferiority margin.
        confidence: Two-sided level of the intervals.
        max_error_rate: Largest share of failed samples allowed.
        rows: The registered run's ``eval_results.json`` rows (empty when unreadable).
    """

    run_id: str
    scores: Mapping[str, float]
    margins: Mapping[str, float]
    confidence: float = 0.95
    max_error_rate: float = 0.05
    rows: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], rows: Sequence[Mapping[str, Any]] = ()) -> RegisteredScores:
        """Read the version tags ``agility register`` writes.

        Example:
            >>> tags = {"agility.registered_from_run": "r1", "agility.metrics": '["token_f1"]', "agility.score.token_f1": "0.42",
            ...         "agility.margins": '{"token_f1": 0.05}', "agility.confidence": "0.9"}
            >>> RegisteredScores.from_tags(tags)
            RegisteredScores(run_id='r1', scores={'token_f1': 0.42}, margins={'token_f1': 0.05}, confidence=0.9, max_error_rate=0.05, rows=())
        """
        names = json.loads(tags.get(METRICS, "[]"))
        return cls(
            run_id=tags.get(REGISTERED_FROM, ""),
            scores={name: float(tags[score_key(name)]) for name in names if score_key(name) in tags},
            margins={name: float(margin) for name, margin in json.loads(tags.get(MARGINS, "{}")).items()},
            confidence=float(tags.get(CONFIDENCE, 0.95)),
            max_error_rate=float(tags.get(MAX_ERROR_RATE, 0.05)),
            rows=tuple(rows),
        )


def parse_minimums(pairs: Sequence[str]) -> dict[str, float]:
    """``["token_f1=0.4"]`` as ``{"token_f1": 0.4}``; one clear error for anything else.

    Example:
        >>> parse_minimums(["token_f1=0.4", "exact_match=0.25"])
        {'token_f1': 0.4, 'exact_match': 0.25}
        >>> parse_minimums(["token_f1>0.4"])
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.InputError: --min 'token_f1>0.4': use METRIC=VALUE, e.g. token_f1=0.4
    """
    minimums = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise InputError(f"--min '{pair}': use METRIC=VALUE, e.g. token_f1=0.4")
        minimums[name.strip()] = number
    return minimums


def changed_samples(rows: Sequence[Mapping[str, Any]], registered: Sequence[Mapping[str, Any]]) -> set[str]:
    """Ids of samples in both ``eval_results`` tables whose reference or inputs (``input_digest``) differ.

    A registered run logged before inputs were fingerprinted has no ``input_digest``: its references
    are still compared.

    Example:
        >>> before = [{"sample_id": "a", "reference": "42", "input_digest": "d1"}, {"sample_id": "b", "reference": "7", "input_digest": "d2"},
        ...           {"sample_id": "c", "reference": "1", "input_digest": "d3"}]
        >>> now = [{"sample_id": "a", "reference": "42", "input_digest": "d1"}, {"sample_id": "b", "reference": "8", "input_digest": "d2"},
        ...        {"sample_id": "c", "reference": "1", "input_digest": "d9"}, {"sample_id": "d", "reference": "0", "input_digest": "d4"}]
        >>> sorted(changed_samples(now, before))
        ['b', 'c']
    """

    def fingerprint(row: Mapping[str, Any], column: str) -> str:
        return json.dumps(row.get(column), sort_keys=True, default=str)

    before = {str(row["sample_id"]): row for row in registered}
    changed = set()
    for row in rows:
        old = before.get(str(row["sample_id"]))
        if old is None:
            continue
        inputs_known = old.get(INPUT_DIGEST) is not None and row.get(INPUT_DIGEST) is not None
        if fingerprint(row, "reference") != fingerprint(old, "reference") or (inputs_known and row[INPUT_DIGEST] != old[INPUT_DIGEST]):
            changed.add(str(row["sample_id"]))
    return changed


def hold_to_scores(
    rows: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, float],
    *,
    minimums: Mapping[str, float],
    registered: RegisteredScores,
) -> tuple[bool, list[str]]:
    """Hold a fresh evaluation (its ``eval_results`` rows and run metrics) to the thresholds and the registered scores.

    Samples whose reference or inputs changed since registration (:func:`changed_samples`) are not
    paired with the registered run's answers: like new samples, they are held to its mean.

    Example:
        >>> registered = RegisteredScores("r1", {"token_f1": 0.5}, {"token_f1": 0.05},
        ...     rows=[{"sample_id": "a", "error": None, "token_f1": 0.5}, {"sample_id": "b", "error": None, "token_f1": 0.5}])
        >>> rows = [{"sample_id": "a", "error": None, "token_f1": 0.5}, {"sample_id": "b", "error": None, "token_f1": 0.1},
        ...         {"sample_id": "c", "error": None, "token_f1": 0.1}]
        >>> hold_to_scores(rows, {"token_f1": 0.2333, "n_samples": 3.0, "n_errors": 0.0}, minimums={"token_f1": 0.2}, registered=registered)
        (False, ['token_f1 0.2333 >= 0.2', 'samples since registration: 2 unchanged, 0 changed (references; the registered run predates input digests, so changed inputs cannot be seen), 1 new; only unchanged ones are paired with the registered run', 'token_f1 -0.267 [-0.400, 0.000] on 2 samples paired with the registered run and 1 new or changed against its mean 0.500: outside margin 0.05'])
    """
    from agility_mlflow.compare import RunRecord, compare_metric, metric_direction

    reasons: list[str] = []
    passed = True
    for name, minimum in minimums.items():
        value = metrics.get(name)
        ok = value is not None and value >= minimum
        passed &= ok
        reasons.append(f"{name} {value:.4g} {'>=' if ok else '<'} {minimum:g}" if value is not None else f"{name}: no scores, so {name} >= {minimum:g} fails")
    n, errors = metrics.get("n_samples", 0.0), metrics.get("n_errors", 0.0)
    if n and errors / n > registered.max_error_rate:
        passed = False
        reasons.append(f"errors {errors:.0f}/{n:.0f} ({errors / n:.0%}) over limit {registered.max_error_rate:.0%}")
    fresh = RunRecord("check", "check", "check", rows=tuple(rows))
    before = RunRecord(registered.run_id, "registered", "candidate", rows=tuple(registered.rows))
    changed = changed_samples(rows, registered.rows)
    if registered.rows:
        reasons.append(_dataset_line(rows, registered.rows, changed))
    for name, mean in registered.scores.items():
        scored = fresh.scores(name)
        old = {sample_id: value for sample_id, value in before.scores(name).items() if sample_id not in changed}
        if not scored:
            passed = False
            reasons.append(f"{name}: no scores on this dataset")
            continue
        # New and changed samples are held to the registered mean: each is paired with it.
        baseline = {sample_id: old.get(sample_id, mean) for sample_id in scored}
        n_new = sum(sample_id not in old for sample_id in scored)
        n_paired = len(scored) - n_new
        # compare's rule, as `agility compare` decides a candidate; check decides on the samples it has (no minimum).
        comparison = compare_metric(baseline, scored, name, decision=_check_decision(name, registered), higher_is_better=metric_direction(name))
        ok = comparison.outcome == "pass"
        passed &= ok
        if n_paired:
            against = f"{n_paired} samples paired with the registered run" + (f" and {n_new} new or changed against its mean {mean:.3f}" if n_new else "")
        else:
            against = f"{n_new} new or changed samples against the registered mean {mean:.3f}"
        direction = "" if comparison.higher_is_better else " (lower is better)"
        reasons.append(f"{name} {comparison.difference:+.3f} [{comparison.ci_low:.3f}, {comparison.ci_high:.3f}] on {against}: "
                       f"{'within' if ok else 'outside'} margin {comparison.margin:g}{direction}")
    return passed, reasons


def _check_decision(metric: str, registered: RegisteredScores) -> DecisionConfig:
    """The decision settings a check holds ``metric`` to: the registered margin and confidence, a bootstrap
    interval (new samples are held to a mean, so the differences are not 0/1), and no minimum of samples."""
    decision = DecisionConfig(margins={metric: registered.margins.get(metric, 0.05)}, confidence=registered.confidence, method="bootstrap")
    return decision.model_copy(update={"min_samples": 0})


def parse_columns(pairs: Sequence[str]) -> dict[str, str]:
    """``["sample_id=financebench_id"]`` as ``{"sample_id": "financebench_id"}`` (golden name = the file's column).

    Example:
        >>> parse_columns(["sample_id=financebench_id", "answer_ground_truth=ground_truths"])
        {'sample_id': 'financebench_id', 'answer_ground_truth': 'ground_truths'}
        >>> parse_columns(["sample_id"])
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.InputError: --columns 'sample_id': use KEY=COLUMN, e.g. sample_id=financebench_id
    """
    columns = {}
    for pair in pairs:
        key, sep, column = (part.strip() for part in pair.partition("="))
        if not sep or not key or not column:
            raise InputError(f"--columns '{pair}': use KEY=COLUMN, e.g. sample_id=financebench_id")
        columns[key] = column
    return columns


def _dataset_line(rows: Sequence[Mapping[str, Any]], registered: Sequence[Mapping[str, Any]], changed: set[str]) -> str:
    """How the checked samples relate to the registered run's, e.g. ``samples since registration: 36 unchanged, 3 changed ...``."""
    before = {str(row["sample_id"]) for row in registered}
    ids = [str(row["sample_id"]) for row in rows]
    common = sum(sample_id in before for sample_id in ids)
    what = "inputs or references" if any(row.get(INPUT_DIGEST) is not None for row in registered) else (
        "references; the registered run predates input digests, so changed inputs cannot be seen")
    return (f"samples since registration: {common - len(changed)} unchanged, {len(changed)} changed ({what}), "
            f"{len(ids) - common} new; only unchanged ones are paired with the registered run")


def check_model(
    model_uri: str,
    dataset: str | os.PathLike[str],
    *,
    minimums: Mapping[str, float] | None = None,
    columns: Mapping[str, str] | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    cache: bool = True,
) -> CheckResult:
    """Evaluate the model ``models:/NAME@ALIAS`` (or ``/VERSION``) on ``dataset`` and hold it to its registered scores.

    The model's own configuration (provider, model id, prompt version, inference parameters; a
    ``steps:`` pipeline whole, its replayed steps from the dataset) is evaluated through the same backends as ``agility run``, in a run tagged ``agility.role = check``
    (so ``agility compare`` never decides it) in the experiment it was registered from.

    Args:
        model_uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` of a model ``agility register`` made.
        dataset: The golden dataset to evaluate on (``.csv``, ``.jsonl``, ``.parquet``).
        minimums: Metric name to the lowest acceptable mean (the metric must be a known one).
        columns: Renames ``{golden_name: file_column}`` for ``dataset``, over those the model was
            registered with (its config's ``dataset.columns``), so a dataset kept in the team's own
            column names is read as it was at registration.
        experiment: Experiment for the check run; default the one the model was registered from.
        tracking_uri: Overrides ``MLFLOW_TRACKING_URI``.
        cache: Serve answers from the response cache; ``False`` calls the model for every sample (to
            catch a provider changing a model behind the same id).

    Raises:
        InputError: The model URI, the dataset or a ``--min`` metric is bad.

    Example:
        >>> result = check_model("models:/app.fin-qa@champion", "golden-2026-12.csv", minimums={"token_f1": 0.3})  # doctest: +SKIP
        >>> result.passed, result.reasons  # doctest: +SKIP
        (True, ['token_f1 0.412 >= 0.3', 'token_f1 -0.008 [-0.051, 0.034] on 36 samples paired with the registered run: within margin 0.05'])
    """
    import mlflow
    from mlflow import MlflowClient

    from agility_mlflow import tracking
    from agility_mlflow.compare import read_results
    from agility_mlflow.scoring import get_metric

    parse_model_uri(model_uri)  # a malformed URI fails before any store is opened (or created)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    tracking.check_reachable()
    minimums = dict(minimums or {})
    for name, value in minimums.items():
        try:
            get_metric(name)
        except InputError as exc:
            raise InputError(f"--min '{name}={value:g}': {exc}") from None
    version = _model_version(MlflowClient(), model_uri)
    model_config = _model_config(version)
    registered_tags = RegisteredScores.from_tags(version.tags)
    registered = RegisteredScores.from_tags(version.tags, read_results(registered_tags.run_id) or () if registered_tags.run_id else ())
    metrics = [*registered.scores, *[m for m in minimums if m not in registered.scores]]
    if not metrics:
        raise InputError(f"{model_uri} records no scores and no --min was given: nothing to check")
    registered_renames = json.loads(version.tags.get(DATASET_COLUMNS, "{}"))
    if registered_renames:
        logger.info("reading %s with the column renames %s was registered with (override with --columns KEY=COLUMN)",
                    Path(dataset).name, registered_renames)
    renames = {**registered_renames, **(columns or {})}
    config = _check_config(version, model_config, Path(dataset), renames, metrics, experiment or version.tags.get(EXPERIMENT), cache)
    return _evaluate_and_hold(config, version, model_uri, model_config["prompt_uri"], minimums, registered)


def _check_config(
    version: Any, model_config: Mapping[str, Any], dataset: Path, columns: Mapping[str, str], metrics: list[str], experiment: str | None,
    cache: bool,
) -> Any:
    from pydantic import ValidationError

    from agility_mlflow.config import Config

    dataset = dataset.resolve()
    model = model_config["model"]
    prompts, steps = check_sections(model_config)  # a pipeline is evaluated whole, as `agility run` did
    try:
        return Config.model_validate({
            "experiment": experiment or "agility-check",
            "dataset": {"path": str(dataset), "columns": dict(columns)},
            "prompts": prompts,
            "steps": steps,
            "candidates": [{"name": version.name, **model}],
            "metrics": metrics,
            "pricing": model_config.get("pricing") or {},
            "judge": json.loads(version.tags[JUDGE]) if JUDGE in version.tags else None,
            "run": {"cache": cache},
            "path": dataset.parent / "agility-check.yaml",
        })
    except ValidationError as exc:
        raise InputError(f"models:/{version.name}/{version.version}: its agility model config is invalid ({exc.errors()[0]['msg']})") from None


def _evaluate_and_hold(
    config: Any, version: Any, model_uri: str, prompt_uri: str, minimums: Mapping[str, float], registered: RegisteredScores
) -> CheckResult:
    from agility_mlflow import tracking
    from agility_mlflow.evaluation import EvaluationSession, prepare

    project = prepare(config, with_source=False)
    (configuration,) = project.configurations
    # Tagged a check from the start: `agility compare` must never decide it, even if it dies half-way.
    tags = {tracking.ROLE: "check", tracking.CANDIDATE: version.name, CHECK_MODEL: model_uri, CHECK_VERSION: str(version.version)}
    # The judge is the one registered with the model, for its judged metrics.
    with EvaluationSession(project, progress=False, open_backends=True) as session:
        with session.run(f"check/{version.name}/v{version.version}", tags, prompt_uri=prompt_uri) as run_id:
            result = session.evaluate(configuration)
            if registered.rows:
                result.metrics["n_samples_changed"] = float(len(changed_samples(result.rows, registered.rows)))
            session.log(configuration, result, run_id, prompt_uri)
            passed, reasons = hold_to_scores(result.rows, result.metrics, minimums=minimums, registered=registered)
            tracking.set_tags(run_id, {CHECK: "pass" if passed else "fail", CHECK_REASONS: "; ".join(reasons)[:5000]})
    return CheckResult(passed, run_id, result.metrics, reasons)


def parse_model_uri(model_uri: str) -> tuple[str, str, str]:
    """``(name, "alias" | "version", value)`` of a model URI; an :class:`InputError` for anything else.

    Example:
        >>> parse_model_uri("models:/app.fin-qa@champion"), parse_model_uri("models:/app.fin-qa/3")
        (('app.fin-qa', 'alias', 'champion'), ('app.fin-qa', 'version', '3'))
    """
    rest = model_uri.removeprefix("models:/")
    if "@" in rest and rest != model_uri:
        name, _, alias = rest.partition("@")
        if name and alias:
            return name, "alias", alias
    name, _, number = rest.rpartition("/")
    if rest == model_uri or not name or not number.isdigit():
        raise InputError(f"--model '{model_uri}': use models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, "version", number


def _model_version(client: Any, model_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    name, kind, value = parse_model_uri(model_uri)
    try:
        if kind == "alias":
            return client.get_model_version_by_alias(name, value)
        return client.get_model_version(name, value)
    except MlflowException as exc:
        raise InputError(f"--model '{model_uri}': {str(exc).splitlines()[0]}") from None


def _model_config(version: Any) -> dict[str, Any]:
    import mlflow.models

    uri = f"models:/{version.name}/{version.version}"
    config = mlflow.models.get_model_info(uri).flavors.get("python_function", {}).get("config")
    if not config or "model" not in config:
        raise InputError(f"{uri} is not an agility model (no agility model config)")
    return dict(config)
