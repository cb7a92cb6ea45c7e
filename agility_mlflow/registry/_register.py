"""``agility register``: the winner (model + prompt version + parameters) into the MLflow Model Registry."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agility_mlflow.config import Config, InferenceParams, load_config
from agility_mlflow.errors import InputError
from agility_mlflow.registry import _served
from agility_mlflow.vocabulary import (
    CANDIDATE,
    CONFIDENCE,
    DATASET_COLUMNS,
    EXPERIMENT,
    JUDGE,
    MARGINS,
    MAX_ERROR_RATE,
    METRICS,
    REGISTERED_FROM,
    SERVED_INPUTS,
    VERDICT_PREFIX,
    VERDICTS_ARTIFACT,
    WINNER,
    score_key,
)

logger = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""Version tag: the ``dataset.columns`` renames the run was evaluated with, which ``agility check`` applies."""
# MLflow accepts more, but these characters are safe in filters, URIs and shells alike.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Registration:
    """A model version ``agility register`` created.

    Attributes:
        name: The registered model name.
        version: The new model version.
        alias: The alias now on that version and on its prompt version.
        run_id: The evaluated run that was registered.
        model_uri: The logged model (``models:/m-...``).
        prompt_uri: The prompt version (``prompts:/NAME/N``).

    Example:
        >>> Registration("app.fin-qa", "3", "champion", "5c1f", "models:/m-1", "prompts:/fin-qa/2").alias_uri
        'models:/app.fin-qa@champion'
    """

    name: str
    version: str
    alias: str
    run_id: str
    model_uri: str
    prompt_uri: str

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def register(
    config: Config | str | os.PathLike[str],
    name: str,
    *,
    run_id: str | None = None,
    alias: str = "champion",
    tracking_uri: str | None = None,
    force: bool = False,
) -> Registration:
    """Register the latest comparison's winner (or ``run_id``) as a loadable pyfunc model with an alias.

    The model (models-from-code, the package bundled) holds the provider, model id, endpoint
    options, prompt text and version, and inference parameters of the run, never a key. The model
    version's tags hold the verdict, the scores and the decision rule that ``agility check`` later
    holds it to; the prompt version gets the same alias in the Prompt Registry.

    Args:
        config: The config path (or loaded config) of the experiment the run belongs to.
        name: The registered model name; it must not be a prompt's name (e.g. ``app.fin-qa``).
        run_id: Register this candidate or trial run instead of the latest comparison's winner.
        alias: Alias for the model version and its prompt version.
        tracking_uri: Overrides the config's ``tracking_uri`` and ``MLFLOW_TRACKING_URI``.
        force: Register ``run_id`` although its verdict in the latest comparison is not ``pass``
            (``fail``, ``insufficient``, ``stale``, or not compared at all); the model version's
            description and tags say so.

    Raises:
        InputError: No comparison or no winner (without ``run_id``), an unknown or unsuitable run,
            a run that did not pass (without ``force``), or a model name that is taken by a prompt.

    Example:
        >>> registration = register("projects/financial-qa/agility.yaml", "app.fin-qa")  # doctest: +SKIP
        >>> registration.alias_uri  # doctest: +SKIP
        'models:/app.fin-qa@champion'
    """
    from mlflow import MlflowClient

    from agility_mlflow import tracking

    cfg = config if isinstance(config, Config) else load_config(config)
    for option, value in (("--name", name), ("--alias", alias)):
        if not _MODEL_NAME.match(value):
            raise InputError(f"{option} '{value}': use letters, digits, '.', '_' and '-' (e.g. app.{cfg.prompts[0].name})")
    experiment_id = tracking.existing_experiment(cfg, tracking_uri)
    client = MlflowClient()
    if client.search_prompts(filter_string=f"name = '{name}'"):
        raise InputError(f"--name '{name}' is a Prompt Registry prompt; models and prompts share names: use another (e.g. app.{name})")
    run_id, verdict = _verdict(client, experiment_id, cfg, run_id)
    run = _run(client, run_id, experiment_id, cfg)
    # What the run can be registered as comes first: a replayed run has no model to call, whatever its verdict.
    prompt_uri = run.data.tags[tracking.PROMPT]
    model_config = _model_config(cfg, run, prompt_uri)
    if cfg.steps:
        _check_same_steps(cfg, run)
        model_config["steps"] = _served.step_entries(cfg, model_config, tracking_uri)
        model_config["pricing"].update({s.model.model_id: cfg.pricing[s.model.model_id].model_dump()
                                        for s in cfg.steps if s.model is not None and s.model.model_id in cfg.pricing})
    inputs = _served.input_columns(model_config)
    if verdict["outcome"] != "pass":
        if not force:
            raise InputError(f"--run-id {run_id}: {_did_not_pass(verdict)}; pass --force to register it anyway")
        logger.warning("registering run %s although %s (--force)", run_id, _did_not_pass(verdict))
        verdict["forced"] = "true"
    metric_names = [m for m in cfg.metric_names if m in run.data.metrics]
    decision = cfg.decision
    tags = {
        REGISTERED_FROM: run_id,
        EXPERIMENT: cfg.experiment,
        DATASET_COLUMNS: json.dumps(cfg.dataset.columns, sort_keys=True),
        METRICS: json.dumps(metric_names),
        MARGINS: json.dumps({m: decision.margins.get(m, decision.margin) for m in metric_names}),
        CONFIDENCE: repr(decision.confidence),
        MAX_ERROR_RATE: repr(decision.max_error_rate),
        **{score_key(m): repr(run.data.metrics[m]) for m in metric_names},
        # The judge scored the judged metrics: `agility check` must ask the same one (never its key).
        **({JUDGE: json.dumps(_judge_config(cfg))} if cfg.judge is not None else {}),
        **{VERDICT_PREFIX + k: v[:5000] for k, v in verdict.items()},
        SERVED_INPUTS: json.dumps(inputs),
    }
    description = (
        f"{run.info.run_name} ({model_config['model']['provider']}:{model_config['model']['model_id']}, {prompt_uri}) "
        f"from run {run_id}; verdict: {verdict['outcome']}" + (f": {verdict['reasons']}" if verdict.get("reasons") else "")
        + ("; registered with --force although it did not pass" if force and verdict["outcome"] != "pass" else "")
        + (f"; serves the pipeline {_pipeline_text(cfg, inputs)}; inputs: {', '.join(inputs)}" if cfg.steps else "")
    )
    with tracking.evaluation_run(experiment_id, f"register/{name}", {tracking.ROLE: "registration", REGISTERED_FROM: run_id},
                                 prompt_uri=prompt_uri):
        info = tracking.log_pyfunc_model(MODEL_CODE, model_config, code_paths=[PACKAGE_DIR], input_columns=inputs)
    version = tracking.register_model(info.model_uri, name, alias, tags, prompt_uri, description=description[:5000])
    return Registration(name, version, alias, run_id, info.model_uri, prompt_uri)


def _verdict(client: Any, experiment_id: str, cfg: Config, run_id: str | None) -> tuple[str, dict[str, str]]:
    """The run to register (``run_id``, else the latest comparison's winner) and its verdict in that comparison."""
    from agility_mlflow.compare import finished_with_role

    comparisons = client.search_runs([experiment_id], filter_string=finished_with_role("comparison"),
                                     order_by=["attributes.start_time DESC"], max_results=1)
    comparison = comparisons[0] if comparisons else None
    if run_id is None:
        if comparison is None:
            raise InputError(f"{cfg.path.name}: no comparison run in '{cfg.experiment}': run `agility compare` first, or pass --run-id")
        run_id = comparison.data.tags.get(WINNER, "none")
        if run_id == "none":
            raise InputError(
                f"{cfg.path.name}: the latest comparison ({comparison.info.run_id}) has no winner; pass --run-id to register a run anyway"
            )
    verdict = {"outcome": "not compared"}
    if comparison is not None:
        for entry in (_artifact_json(client, comparison.info.run_id, VERDICTS_ARTIFACT) or {}).get("verdicts", []):
            if entry.get("run_id") == run_id:
                verdict = {"outcome": str(entry.get("outcome", "")), "reasons": "; ".join(entry.get("reasons", [])),
                           "comparison_run": comparison.info.run_id}
    return run_id, verdict


def _did_not_pass(verdict: Mapping[str, str]) -> str:
    """Why a verdict is not a pass, in a few words, e.g. ``its verdict is 'fail' in comparison 5c1f``."""
    if verdict["outcome"] == "not compared":
        return "it has no verdict (not decided by the latest comparison)"
    return f"its verdict is '{verdict['outcome']}' in comparison {verdict['comparison_run']}"


def _judge_config(cfg: Config) -> dict[str, Any]:
    """The judge section as ``agility check`` needs it: no key, the style guide as text rather than a path."""
    from agility_mlflow.evaluation import judge_style_guide

    judge = cfg.public_dict()["judge"]
    judge.pop("api_key", None)
    judge["style_guide"] = judge_style_guide(cfg)
    return judge


def _artifact_json(client: Any, run_id: str, path: str) -> Any:
    import tempfile

    from agility_mlflow import tracking

    try:
        with tracking.quiet_artifact_downloads(), tempfile.TemporaryDirectory() as scratch:
            return json.loads(Path(client.download_artifacts(run_id, path, scratch)).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - the verdict text is a nicety; the winner tag is what counts
        logger.warning("run %s: %s unreadable; registering without the verdict text", run_id, path)
        return None


def _run(client: Any, run_id: str, experiment_id: str, cfg: Config) -> Any:
    from mlflow.exceptions import MlflowException

    from agility_mlflow import tracking

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError(f"--run-id {run_id}: no such run") from None
    if run.info.experiment_id != experiment_id:
        raise InputError(f"--run-id {run_id}: the run is not in experiment '{cfg.experiment}' of {cfg.path.name}")
    role = run.data.tags.get(tracking.ROLE)
    if role not in ("candidate", "trial") or not run.data.tags.get(tracking.PROMPT):
        raise InputError(f"--run-id {run_id}: a {role or 'untagged'} run; only candidate and trial runs can be registered")
    if run.info.status != "FINISHED":
        raise InputError(f"--run-id {run_id}: the run is {run.info.status}, not FINISHED")
    return run


def _model_config(cfg: Config, run: Any, prompt_uri: str) -> dict[str, Any]:
    """Provider, endpoint options, prompt text and parameters of ``run``: what its answers came from."""
    from agility_mlflow.prompts import template_from_registry

    params = run.data.params
    candidate_name = run.data.tags.get(CANDIDATE)
    candidate = next((c for c in cfg.candidates if c.name == candidate_name), None)
    if candidate is None:
        raise InputError(f"{cfg.path.name}: run {run.info.run_id} is of candidate '{candidate_name}', which the config no longer has")
    if "replay" in (candidate.provider, params.get("provider")):
        raise InputError(
            f"{cfg.path.name}: run {run.info.run_id} of candidate '{candidate.name}' replays recorded outputs (provider: replay): "
            "there is no model to call; add a candidate that calls that model, run and compare it, then register that run"
        )
    # The run says which model answered; the config adds the endpoint options (never logged as params).
    for key in ("provider", "model_id"):
        if params.get(key, getattr(candidate, key)) != getattr(candidate, key):
            raise InputError(
                f"{cfg.path.name}: key 'candidates': run {run.info.run_id} used {key} '{params[key]}' but candidate "
                f"'{candidate.name}' now has '{getattr(candidate, key)}'; register from the config that made the run"
            )
    inference = {}
    for name in InferenceParams.model_fields:
        if name in params:
            try:
                inference[name] = json.loads(params[name])
            except ValueError:
                inference[name] = params[name]
    if candidate.api_key is not None:
        logger.warning("candidate '%s' has an inline api_key, which is never stored: the model reads %s", candidate.name,
                       candidate.api_key_env or "OPENAI_API_KEY")
    model = candidate.model_dump(mode="json", exclude={"name", "prompts", "api_key", "params"}, exclude_none=True)
    model["params"] = InferenceParams.model_validate(inference).model_dump(mode="json", exclude_none=True)  # an unset provider control is no control
    prompt = template_from_registry(prompt_uri)
    price = cfg.pricing.get(candidate.model_id)
    return {
        "model": model,
        "prompt_uri": prompt_uri,
        "prompt_name": prompt.name,
        "template": prompt.user,
        "system": prompt.system,
        "format": prompt.format,
        "pricing": {candidate.model_id: price.model_dump()} if price else {},
    }


def _check_same_steps(cfg: Config, run: Any) -> None:
    """The run's steps (its ``step.<name>.*`` metrics) are the config's: the pipeline registered is the one evaluated."""
    logged = {key.split(".")[1] for key in run.data.metrics if key.startswith("step.")}
    if logged != {step.name for step in cfg.steps or []}:
        raise InputError(f"{cfg.path.name}: key 'steps': run {run.info.run_id} was evaluated with the steps {sorted(logged) or 'none'}, "
                         f"the config has {[step.name for step in cfg.steps or []]}; register from the config that made the run")


def _pipeline_text(cfg: Config, inputs: list[str]) -> str:
    """E.g. ``metadata (replayed; not served) -> rewrite (served: input 'query') -> answer (this model)``."""
    def how(step: Any) -> str:
        if step.migrated:
            return "this model"
        if step.replay:
            return f"served: input '{step.variable}'" if step.variable in inputs else "replayed; not served"
        return f"{step.model.provider}:{step.model.model_id}"

    return " -> ".join(f"{step.name} ({how(step)})" for step in cfg.steps or [])
