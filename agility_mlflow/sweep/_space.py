"""The search space: which prompt variant, which candidate model, which inference parameters."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from agility_mlflow.config import CandidateConfig, Choices, Range, SweepConfig
from agility_mlflow.errors import InputError
from agility_mlflow.prompts import Template

_INTEGER_PARAMS = {"max_tokens", "seed", "top_k", "thinking_budget"}
EXTRA = "extra."


@dataclass(frozen=True)
class TrialPlan:
    """What one trial evaluates."""

    candidate: CandidateConfig
    template: Template
    prompt_key: str
    instruction: str


def variant(template: Template, instruction: str) -> Template:
    """``template`` with ``instruction`` appended to its user message, under a name of its own.

    Variants get their own Prompt Registry name (``NAME.i<hash>``) so alternating variants never
    pile up versions of the base prompt.

    Example:
        >>> base = Template.from_text("qa", "Q: {{question}}")
        >>> v = variant(base, "Answer in one sentence.")
        >>> v.name, v.user
        ('qa.i5a0dbd', 'Q: {{question}}\\n\\nAnswer in one sentence.')
    """
    if not instruction.strip():
        return template
    tag = hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:6]
    return template.appended(f"{template.name}.i{tag}", instruction.strip())


def suggest(
    trial: optuna.Trial,
    sweep: SweepConfig,
    candidates: Mapping[str, CandidateConfig],
    templates: Mapping[str, Template],
) -> TrialPlan:
    """Ask the trial for a point in the space and build the configuration it names."""
    name = trial.suggest_categorical("candidate", list(candidates))
    prompt_key = trial.suggest_categorical("prompt", list(templates))
    instruction = trial.suggest_categorical("instruction", list(sweep.instructions))
    base = candidates[name]
    params = base.params.model_dump()
    params["extra"] = dict(params["extra"])
    for param, space in sweep.params.items():
        value = _suggest_param(trial, param, space)
        if param.startswith(EXTRA):  # a provider field: extra.top_k sets params.extra.top_k
            params["extra"][param.removeprefix(EXTRA)] = value
        else:
            params[param] = value
    candidate = base.model_copy(update={"params": base.params.model_validate(params)})
    return TrialPlan(candidate, variant(templates[prompt_key], instruction), prompt_key, instruction)


def varying(sweep: SweepConfig) -> list[str]:
    """The inference parameters the search varies: a single choice or an empty range is not a dimension.

    Example:
        >>> varying(SweepConfig(params={"temperature": {"low": 0.0, "high": 0.6}, "max_tokens": {"choices": [64]}}))
        ['temperature']
    """
    return [name for name, spec in sweep.params.items() if (len(spec.choices) > 1 if isinstance(spec, Choices) else spec.high > spec.low)]


def trial_name(plan: TrialPlan, prompt_uri: str, parameters: Sequence[str], number: int) -> str:
    """A trial run's name: its candidate, prompt version and the values of the varying ``parameters``.

    Example:
        >>> plan = TrialPlan(CandidateConfig(name="local", provider="local", model_id="m", params={"temperature": 0.2}),
        ...                  Template.from_text("qa", "Q: {{question}}"), "qa", "")
        >>> trial_name(plan, "prompts:/qa.i5a0dbd/2", ["temperature"], 3)
        'local/qa.i5a0dbd v2 temperature=0.2 (trial 3)'
    """
    prompt, _, version = prompt_uri.removeprefix("prompts:/").rpartition("/")
    values = plan.candidate.params.as_dict()
    shown = "".join(f" {name}={values[name]:g}" if isinstance(values[name], float | int) else f" {name}={values[name]}" for name in parameters)
    return f"{plan.candidate.name}/{prompt} v{version}{shown} (trial {number})"


def _suggest_param(trial: optuna.Trial, name: str, space: Range | Choices) -> Any:
    if isinstance(space, Choices):
        return trial.suggest_categorical(name, space.choices)
    if _is_integer(name, space):
        return trial.suggest_int(name, int(space.low), int(space.high), step=int(space.step or 1), log=space.log)
    return trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)


def grid(sweep: SweepConfig, candidates: Sequence[str], prompt_keys: Sequence[str]) -> dict[str, list[Any]]:
    """The finite search space the grid sampler enumerates; ranges need a ``step``."""
    space: dict[str, list[Any]] = {"candidate": list(candidates), "prompt": list(prompt_keys), "instruction": list(sweep.instructions)}
    for name, spec in sweep.params.items():
        if isinstance(spec, Choices):
            space[name] = list(spec.choices)
        elif spec.step is None:
            raise InputError(f"sweep.params.{name}: the grid sampler needs 'step' or 'choices'")
        else:
            values = np.arange(spec.low, spec.high + spec.step / 2, spec.step)
            space[name] = [int(v) for v in values] if _is_integer(name, spec) else [round(float(v), 10) for v in values]
    return space


def size(space: Mapping[str, Sequence[Any]]) -> int:
    """How many configurations a finite space holds."""
    return int(np.prod([len(v) for v in space.values()]))


def _is_integer(name: str, space: Range) -> bool:
    """Integer parameters, and provider fields (``extra.*``) whose range bounds and step are whole numbers."""
    if name.startswith(EXTRA):
        return all(float(v).is_integer() for v in (space.low, space.high, space.step or 1))
    return name in _INTEGER_PARAMS
