"""``agility check``: re-evaluate a registered model on a (refreshed) dataset; a CI gate.

It fails when a ``--min METRIC=VALUE`` threshold is not met, or when a registered score can no
longer be shown non-inferior: the bootstrap interval of (new per-sample score - registered mean)
must stay above minus the margin recorded at registration (the same rule ``agility compare`` uses).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agility_mlflow.errors import InputError


@dataclass
class CheckResult:
    passed: bool
    run_id: str
    metrics: dict[str, float]
    reasons: list[str] = field(default_factory=list)


def parse_minimums(pairs: list[str] | tuple[str, ...]) -> dict[str, float]:
    """``["token_f1=0.4"]`` as ``{"token_f1": 0.4}``; one clear error for anything else.

    Example:
        >>> parse_minimums(["token_f1=0.4", "exact_match=0.25"])
        {'token_f1': 0.4, 'exact_match': 0.25}
    """
    minimums = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            minimums[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise InputError(f"--min '{pair}': use METRIC=VALUE, e.g. token_f1=0.4")
    return minimums


def check_model(
    model_uri: str,
    dataset: str | os.PathLike[str],
    *,
    minimums: dict[str, float] | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> CheckResult:
    """Evaluate the model ``models:/NAME@ALIAS`` (or ``/VERSION``) on ``dataset`` and hold it to its registered scores.

    Example:
        >>> result = check_model("models:/app.fin-qa@champion", "golden-2026-12.csv", minimums={"token_f1": 0.3})  # doctest: +SKIP
        >>> result.passed, result.reasons  # doctest: +SKIP
        (True, ['token_f1 0.412 >= 0.3', 'token_f1 -0.008 [-0.051, 0.034] vs registered 0.420 within margin 0.05'])
    """
    import mlflow
    from mlflow import MlflowClient

    from agility_mlflow.compare import metric_direction, non_inferior, paired_bootstrap_ci
    from agility_mlflow.config import Config
    from agility_mlflow.evaluation import run_project

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    version = _model_version(MlflowClient(), model_uri)
    tags = version.tags
    model_config = _model_config(version)
    metrics = json.loads(tags.get("agility.metrics", "[]"))
    minimums = dict(minimums or {})
    metrics += [m for m in minimums if m not in metrics]
    if not metrics:
        raise InputError(f"{model_uri} records no metrics and no --min was given: nothing to check")
    dataset = Path(dataset).resolve()
    config = Config.model_validate({
        "experiment": experiment or tags.get("agility.experiment") or "agility-check",
        "dataset": {"path": str(dataset)},
        "prompts": [{"name": model_config["prompt_name"], "template": model_config["prompt_uri"]}],
        "candidates": [{"name": f"check/{version.name}", **model_config["model"]}],
        "metrics": metrics,
        "path": dataset.parent / "agility-check.yaml",
    })
    summary = run_project(config, progress=False, with_source=False)[0]
    table = _results(summary.run_id)
    registered_rows = {str(r["sample_id"]): r for r in _results(tags.get("agility.registered_from_run", ""))}
    reasons, passed = [], True
    for name, minimum in minimums.items():
        value = summary.metrics.get(name)
        ok = value is not None and value >= minimum
        passed &= ok
        reasons.append(f"{name} {value:.4g} {'>=' if ok else '<'} {minimum:g}" if value is not None else f"{name} not measured")
    margins = json.loads(tags.get("agility.margins", "{}"))
    for name in json.loads(tags.get("agility.metrics", "[]")):
        registered = float(tags[f"agility.score.{name}"])
        scored = {str(row["sample_id"]): float(row[name]) for row in table if row.get(name) is not None}
        if not scored:
            passed = False
            reasons.append(f"{name}: no scores on this dataset")
            continue
        # Samples the registered run also answered are compared pair by pair (as `agility compare` does);
        # an all-new dataset is held to the registered mean.
        paired = {k: v - float(registered_rows[k][name]) for k, v in scored.items()
                  if k in registered_rows and registered_rows[k].get(name) is not None}
        differences = list(paired.values()) if len(paired) >= 2 else [v - registered for v in scored.values()]
        against = f"{len(paired)} samples paired with the registered run" if len(paired) >= 2 else f"registered mean {registered:.3f}"
        low, high = paired_bootstrap_ci(differences)
        margin = float(margins.get(name, 0.05))
        ok = non_inferior(low, high, margin, higher_is_better=metric_direction(name))
        passed &= ok
        estimate = sum(differences) / len(differences)
        reasons.append(f"{name} {estimate:+.3f} [{low:+.3f}, {high:+.3f}] vs {against}: {'within' if ok else 'outside'} margin {margin:g}")
    from agility_mlflow import tracking

    # A check run is not a candidate: `agility compare` must not decide it.
    tracking.set_tags(summary.run_id, {tracking.ROLE: "check", "agility.check": "pass" if passed else "fail", "agility.check_model": model_uri,
                                       "agility.check_reasons": "; ".join(reasons)[:5000]})
    return CheckResult(passed, summary.run_id, summary.metrics, reasons)


def _model_version(client: Any, model_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    rest = model_uri.removeprefix("models:/")
    if rest == model_uri or not rest:
        raise InputError(f"--model '{model_uri}': use models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, number = rest.rpartition("/")
        return client.get_model_version(name, number)
    except MlflowException as exc:
        raise InputError(f"--model '{model_uri}': {str(exc).splitlines()[0]}") from None


def _model_config(version: Any) -> dict[str, Any]:
    import mlflow.models

    uri = f"models:/{version.name}/{version.version}"
    config = mlflow.models.get_model_info(uri).flavors.get("python_function", {}).get("config")
    if not config or "model" not in config:
        raise InputError(f"{uri} is not an agility model (no agility model config)")
    return config


def _results(run_id: str) -> list[dict[str, Any]]:
    from agility_mlflow.compare._query import _read_results
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as scratch:
        return _read_results(MlflowClient(), run_id, Path(scratch)) or []
