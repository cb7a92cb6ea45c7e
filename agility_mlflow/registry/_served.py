"""The application a registered model serves: one prompt, or a ``steps:`` pipeline, kept in its model config.

A pipeline's registered model runs the whole request: the migrated step with the registered model,
prompt and parameters, and every fixed-model step (``model:``) with its own model, for real. A
replayed step cannot be replayed when serving: its recorded outputs exist for the golden samples
only. Its output is an input of the served model instead, a column the caller gives (as production
computes it today), named after the step's output variable; the signature and the version tag
``agility.served_inputs`` list every column the served model expects. ``agility check`` evaluates
the pipeline as ``agility run`` does, replaying those steps from the dataset's recorded columns.

Each step entry of the model config is the step's config (a fixed model without any key) plus its
prompt: the Prompt Registry version (``prompt_uri``) and its text, so serving needs no registry.

Example:
    >>> config = {"prompt_name": "qa", "prompt_uri": "prompts:/qa/1", "template": "{{context}} Q: {{query}}", "system": None,
    ...           "steps": [{"name": "rewrite", "prompt": "rw", "output": "query", "replay": "query_rec", "prompt_name": "rw",
    ...                      "prompt_uri": "prompts:/rw/1", "template": "{{question}}", "system": None, "format": "mustache"},
    ...                     {"name": "answer", "prompt": "qa", "prompt_name": "qa", "prompt_uri": "prompts:/qa/1",
    ...                      "template": "{{context}} Q: {{query}}", "system": None, "format": "mustache"}]}
    >>> input_columns(config), [step.name for step in planned_steps(config)]
    (['context', 'query'], ['rewrite', 'answer'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agility_mlflow.pipeline import PlannedStep, served_inputs

PROMPT_KEYS = ("prompt_uri", "prompt_name", "template", "system", "format")
"""A step entry's prompt: its registry version and the text served."""
"""Model version tag: the columns the served model expects (JSON list)."""


def step_entries(cfg: Any, model_config: Mapping[str, Any], tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """The config's steps for the model config; the migrated step takes the registered run's prompt (in ``model_config``).

    Every other step's prompt is registered in the Prompt Registry (an identical version is reused).
    """
    from agility_mlflow import tracking
    from agility_mlflow.prompts import load_template

    prompts = {p.name: p for p in cfg.prompts}
    entries = []
    for step in cfg.steps or []:
        entry = step.model_dump(mode="json", exclude_none=True, exclude={"model"})
        if step.model is not None:  # the same for every candidate; never its key (only the variable's name)
            entry["model"] = step.model.model_dump(mode="json", exclude={"api_key"}, exclude_none=True)
        if step.migrated:
            entry.update({key: model_config.get(key, "mustache" if key == "format" else None) for key in PROMPT_KEYS})
        else:
            p = prompts[step.prompt]
            template = load_template(p.name, p.template, p.system, cfg.base_dir, tracking_uri, p.format).registry_form()
            entry.update({"prompt_uri": tracking.register_prompt(template), "prompt_name": template.name, "template": template.user,
                          "system": template.system, "format": template.format})
        entries.append(entry)
    return entries


def planned_steps(model_config: Mapping[str, Any]) -> tuple[PlannedStep, ...]:
    """The steps to serve; a model without ``steps`` is one step, the registered prompt on the registered model."""
    from agility_mlflow.backends.replay import ReplayColumns
    from agility_mlflow.config import ModelConfig
    from agility_mlflow.prompts import Template

    entries = model_config.get("steps") or [{"name": "answer", **{key: model_config.get(key) for key in PROMPT_KEYS}}]
    steps = []
    for entry in entries:
        template = Template.from_text(entry["prompt_name"], entry["template"], entry.get("system"), origin=entry["prompt_uri"],
                                      format=entry.get("format") or "mustache")
        replay = ReplayColumns(entry["replay"]) if entry.get("replay") else None
        model = ModelConfig.model_validate(entry["model"]) if entry.get("model") else None
        steps.append(PlannedStep(entry["name"], entry.get("output") or entry["name"], template, replay, model))
    return tuple(steps)


def input_columns(model_config: Mapping[str, Any]) -> list[str]:
    """The columns the served model reads (see :func:`agility_mlflow.pipeline.served_inputs`)."""
    return served_inputs(planned_steps(model_config))


def check_sections(model_config: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The ``prompts:`` and ``steps:`` of a config that evaluates the registered application as ``agility run`` did."""
    if not model_config.get("steps"):
        return [{"name": model_config["prompt_name"], "template": model_config["prompt_uri"]}], None
    from agility_mlflow.config import StepConfig

    prompts: dict[str, str] = {}
    steps = []
    for entry in model_config["steps"]:
        name = entry["prompt_name"]
        if prompts.get(name, entry["prompt_uri"]) != entry["prompt_uri"]:  # two versions of one prompt: one name each
            name = f"{name}.{entry['name']}"
        prompts[name] = entry["prompt_uri"]
        steps.append({**{key: entry[key] for key in StepConfig.model_fields if key in entry}, "prompt": name})
    return [{"name": name, "template": uri} for name, uri in prompts.items()], steps
