"""``agility register``: the winner (model + prompt version + parameters) into the MLflow Model Registry."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agility_mlflow.config import Config, InferenceParams, load_config
from agility_mlflow.errors import InputError

logger = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
REGISTERED_FROM = "agility.registered_from_run"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str
    run_id: str
    """The evaluated run that was registered."""
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
) -> Registration:
    """Register the comparison's winner (or ``run_id``) as a loadable pyfunc model with an alias.

    The model version's tags hold the verdict, the scores and the decision margin that ``agility
    check`` later holds it to; the prompt version gets the same alias in the Prompt Registry.

    Example:
        >>> registration = register("projects/financial-qa/agility.yaml", "app.fin-qa")  # doctest: +SKIP
        >>> registration.alias_uri  # doctest: +SKIP
        'models:/app.fin-qa@champion'
    """
    from mlflow import MlflowClient

    from agility_mlflow import tracking

    cfg = config if isinstance(config, Config) else load_config(config)
    experiment_id = tracking.existing_experiment(cfg, tracking_uri)
    client = MlflowClient()
    verdict: dict[str, Any] = {}
    if run_id is None:
        run_id, verdict = _winner(client, experiment_id, cfg)
    run = _run(client, run_id)
    if client.search_prompts(filter_string=f"name = '{name}'"):
        raise InputError(f"--name '{name}' is a Prompt Registry prompt; models and prompts share names: use another (e.g. app.{name})")
    prompt_uri = run.data.tags.get("agility.prompt")
    if not prompt_uri:
        raise InputError(f"run {run_id} has no agility.prompt tag: not an agility candidate or trial run")
    model_config = _model_config(cfg, run, prompt_uri)
    metric_names = [m for m in cfg.metrics if m in run.data.metrics]
    tags = {
        REGISTERED_FROM: run_id,
        "agility.experiment": cfg.experiment,
        "agility.metrics": json.dumps(metric_names),
        "agility.margins": json.dumps({m: cfg.decision.margins.get(m, cfg.decision.margin) for m in metric_names}),
        **{f"agility.score.{m}": repr(run.data.metrics[m]) for m in metric_names},
        **{f"agility.verdict.{k}": str(v)[:5000] for k, v in verdict.items()},
    }
    with tracking.evaluation_run(experiment_id, f"register/{name}", {tracking.ROLE: "registration", REGISTERED_FROM: run_id},
                                 prompt_uri=prompt_uri) as registration_run:
        info = tracking.log_pyfunc_model(registration_run, MODEL_CODE, model_config, code_paths=[PACKAGE_DIR])
    version = tracking.register_model(info.model_uri, name, alias, tags, prompt_uri)
    return Registration(name, version, alias, run_id, info.model_uri, prompt_uri)


def _winner(client: Any, experiment_id: str, cfg: Config) -> tuple[str, dict[str, Any]]:
    from agility_mlflow.compare import WINNER
    from agility_mlflow.compare._query import finished_with_role

    runs = client.search_runs([experiment_id], filter_string=finished_with_role("comparison"), order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise InputError(f"{cfg.path.name}: no comparison run in '{cfg.experiment}': run `agility compare` first, or pass --run-id")
    comparison = runs[0]
    winner = comparison.data.tags.get(WINNER, "none")
    if winner == "none":
        raise InputError(f"{cfg.path.name}: the latest comparison ({comparison.info.run_id}) has no winner; pass --run-id to register a run anyway")
    verdict = {"comparison_run": comparison.info.run_id}
    verdicts = _artifact_json(client, comparison.info.run_id, "verdicts.json")
    for entry in (verdicts or {}).get("verdicts", []):
        if entry.get("run_id") == winner or (entry.get("run") or {}).get("run_id") == winner:
            verdict["outcome"] = entry.get("outcome", "")
            verdict["reasons"] = "; ".join(entry.get("reasons", []))
    return winner, verdict


def _artifact_json(client: Any, run_id: str, path: str) -> Any:
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as scratch:
            return json.loads(Path(client.download_artifacts(run_id, path, scratch)).read_text())
    except Exception:  # noqa: BLE001 - the verdict text is a nicety; the winner tag is what counts
        logger.warning("run %s: %s unreadable; registering without the verdict text", run_id, path)
        return None


def _run(client: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError(f"--run-id {run_id}: no such run") from None
    if run.info.status != "FINISHED":
        raise InputError(f"--run-id {run_id}: the run is {run.info.status}, not FINISHED")
    return run


def _model_config(cfg: Config, run: Any, prompt_uri: str) -> dict[str, Any]:
    """Provider, endpoint options, prompt text and parameters of ``run``: what its answers came from."""
    from mlflow import MlflowClient

    params = run.data.params
    candidate_name = run.data.tags.get("agility.candidate")
    candidate = next((c for c in cfg.candidates if c.name == candidate_name), None)
    if candidate is None:
        raise InputError(f"{cfg.path.name}: run {run.info.run_id} is of candidate '{candidate_name}', which the config no longer has")
    inference = {}
    for field in InferenceParams.model_fields:
        if field in params:
            text = params[field]
            try:
                inference[field] = json.loads(text)
            except ValueError:
                inference[field] = text
    if candidate.api_key is not None:
        logger.warning("candidate '%s' has an inline api_key, which is never stored: the model reads %s", candidate.name,
                       candidate.api_key_env or "OPENAI_API_KEY")
    model = candidate.model_dump(mode="json", exclude={"name", "prompts", "api_key", "params"}, exclude_none=True)
    model["params"] = InferenceParams.model_validate(inference).model_dump(mode="json")
    prompt = MlflowClient().load_prompt(prompt_uri)
    content = prompt.template
    if isinstance(content, str):
        user, system = content, None
    else:
        by_role = {m["role"]: m["content"] for m in content}
        user, system = by_role.get("user", ""), by_role.get("system")
    return {"model": model, "prompt_uri": prompt_uri, "prompt_name": prompt.name, "template": user, "system": system}
