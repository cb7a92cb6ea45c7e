"""``agility migrate``: rewrite a prompt for a target model and register it as a new Prompt Registry version.

Two methods: ``metaprompt`` (an LLM, any backend, rewrites the template in the target model's
conventions) and ``bedrock`` (Amazon Bedrock prompt optimization). Either way every placeholder of the
rewritten user text survives, in any format (an ``fstring`` prompt is migrated in its registry form,
``{{variable}}``): renamed placeholders are put back, and a result that loses or invents one is rejected,
never registered. The system message, if any, is kept as it is, placeholders included, so the user text
is checked against its own placeholders only.

Example:
    >>> result = migrate_prompt("projects/financial-qa/agility.yaml", "fin-qa", "bedrock",
    ...                         "us.anthropic.claude-3-5-haiku-20241022-v1:0")  # doctest: +SKIP
    >>> result.uri  # doctest: +SKIP
    'prompts:/fin-qa/2'
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

from agility_mlflow.backends import Backend, create_backend
from agility_mlflow.config import Config, ModelConfig
from agility_mlflow.errors import AgilityError, InputError
from agility_mlflow.evaluation import EvaluationSession, prepare
from agility_mlflow.migrate._bedrock import bedrock_rewrite
from agility_mlflow.migrate._metaprompt import metaprompt_messages, parse_rewrite
from agility_mlflow.migrate._placeholders import check_placeholders, restore_placeholders
from agility_mlflow.prompts import Template
from agility_mlflow.vocabulary import MIGRATED_FROM, MIGRATION_ANALYSIS, MIGRATION_METHOD, TARGET_MODEL

__all__ = ["DEFAULT_VIA", "METHODS", "MigrationResult", "check_placeholders", "migrate_prompt", "restore_placeholders"]

METHODS = ("metaprompt", "bedrock")
DEFAULT_VIA = "local:smollm2-135m-instruct"


@dataclass
class MigrationResult:
    uri: str
    source_uri: str
    template: str
    analysis: str
    repairs: list[str] = field(default_factory=list)
    run_id: str = ""


def migrate_prompt(
    config: Config | str | os.PathLike[str],
    prompt: str,
    method: str,
    target_model: str,
    *,
    via: str | None = None,
    backend: Backend | None = None,
    tracking_uri: str | None = None,
) -> MigrationResult:
    """Migrate config prompt ``prompt`` for ``target_model`` and register the result.

    Args:
        via: For ``metaprompt``, the model that rewrites: a candidate name of the config or
            ``provider:model_id`` (default the local model). Ignored by ``bedrock``.
        backend: A ready backend to rewrite with instead of ``via``.
    """
    from agility_mlflow.runner import Runner

    project = prepare(config, tracking_uri=tracking_uri)
    # The session closes the rewriting model's backend and points MLflow at the experiment; nothing is judged.
    with EvaluationSession(project, tracking_uri=tracking_uri, runner=Runner(project.config.run, progress=False), with_judge=False) as session:
        return _migrate(session, prompt, method, target_model, via, backend)


def _migrate(session: EvaluationSession, prompt: str, method: str, target_model: str, via: str | None, backend: Backend | None) -> MigrationResult:
    from agility_mlflow import tracking
    from agility_mlflow.runner import Request

    project = session.project
    if prompt not in project.templates:
        raise InputError(f"{project.config.path.name}: --prompt '{prompt}' is not a prompt (known: {', '.join(project.templates)})")
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    # Rewritten in the form the registry holds (fstring as {{variable}}), so source and migrated versions compare.
    source = project.templates[prompt].registry_form()
    # Only the user text is rewritten: the system message keeps its own placeholders untouched.
    variables = sorted(Template.from_text(source.name, source.user, origin=source.origin, format=source.format).variables)
    if method == "metaprompt":
        backend = backend or session.adopt(_backend(project.config, via or DEFAULT_VIA))
        params = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 1024}
        outcome = session.runner.run(backend, params, [Request("metaprompt", metaprompt_messages(source.user, variables, target_model), {})])[0]
        if outcome.generation is None:
            raise AgilityError(f"the metaprompt call failed: {outcome.error}")
        rewritten, analysis = parse_rewrite(outcome.generation.text)
    else:
        rewritten, analysis = bedrock_rewrite(source.user, target_model, project.config.candidates[0].region if project.config.candidates else None)
    rewritten, repairs = restore_placeholders(rewritten, variables, source.format)
    check_placeholders(rewritten, variables, f"the {method} rewrite of '{prompt}' for {target_model}", source.format)
    # A new version of the same registry prompt, so its history reads source -> migrated.
    migrated = Template.from_text(source.registry_name, rewritten, source.system, origin=f"{method} for {target_model}", format=source.format)

    session.open_experiment()
    source_uri = tracking.register_prompt(source)
    tags = {MIGRATED_FROM: source_uri, MIGRATION_METHOD: method, TARGET_MODEL: target_model, MIGRATION_ANALYSIS: analysis[:5000]}
    uri = tracking.register_prompt(migrated, tags=tags)
    diff = "".join(difflib.unified_diff(source.user.splitlines(keepends=True), rewritten.splitlines(keepends=True),
                                        fromfile=source_uri, tofile=uri))
    with session.run(f"migrate/{prompt}", {tracking.ROLE: "migration"}, prompt_uri=uri) as run_id:
        tracking.log_run_data(run_id, {"method": method, "target_model": target_model, "source_prompt": source_uri,
                                       "migrated_prompt": uri, "via": via or (DEFAULT_VIA if method == "metaprompt" else "bedrock")},
                              {"placeholders_repaired": float(len(repairs))})
        tracking.log_text(run_id, diff or "(no change)\n", "prompt.diff")
        tracking.log_text(run_id, analysis or "(no analysis returned)\n", "analysis.txt")
    return MigrationResult(uri, source_uri, rewritten, analysis, repairs, run_id)


def _backend(config: Config, via: str) -> Backend:
    candidate = next((c for c in config.candidates if c.name == via), None)
    if candidate is not None:
        return create_backend(candidate, config.run)
    provider, _, model_id = via.partition(":")
    if not model_id:
        raise InputError(f"--via '{via}' is neither a candidate of {config.path.name} nor provider:model_id")
    try:
        return create_backend(ModelConfig(provider=provider, model_id=model_id), config.run)
    except ValueError as exc:
        raise InputError(f"--via '{via}': {str(exc).splitlines()[0]}") from None


__all__ = ["METHODS", "MigrationResult", "migrate_prompt"]
