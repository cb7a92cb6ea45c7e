"""Multi-step applications: several LLM calls per request, one of them being migrated.

A RAG assistant may rewrite the query, then answer it. Each step renders its prompt from the
dataset row and the earlier steps' outputs, and is answered by recorded outputs (``replay``), a
fixed model, or (the migrated step) the run's own model. The steps' latencies, tokens and costs
add up to the sample's; each step's are also kept apart (``step.<name>.latency_s`` in the results,
``step.<name>.latency_p50_s`` on the run), so a comparison can look at the step that changed.

Example:
    >>> from agility_mlflow.config import RunSettings, SourceConfig
    >>> from agility_mlflow.prompts import Template
    >>> from agility_mlflow.runner import Runner
    >>> from agility_mlflow.backends.replay import ReplayBackend
    >>> steps = [PlannedStep("rewrite", "query", Template.from_text("rw", "{{question}}"), replay=ReplayColumns("query_rec", latency="rw_latency")),
    ...          PlannedStep("answer", "answer", Template.from_text("qa", "Q: {{query}}"))]
    >>> row = {"sample_id": "q1", "question": "rev?", "query_rec": "revenue 2023", "rw_latency": 0.5,
    ...        "answer_source_llm": "$1.5M", "latency_source_llm": 1.0}
    >>> outcomes, columns = run_steps(steps, ReplayBackend("m"), {}, [row], Runner(RunSettings(cache=False), progress=False), None)
    >>> outcomes[0].generation.text, outcomes[0].generation.latency_s, columns[0]["step.rewrite.output"]
    ('$1.5M', 1.5, 'revenue 2023')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agility_mlflow.backends import Backend, Generation, create_backend
from agility_mlflow.backends.replay import ReplayBackend, ReplayColumns
from agility_mlflow.config import ModelConfig, RunSettings
from agility_mlflow.pricing import Price, cost_usd
from agility_mlflow.prompts import Template
from agility_mlflow.runner import Outcome, Request, Runner

STEP_FIELDS = ("output", "latency_s", "input_tokens", "output_tokens", "cost_usd")


@dataclass(frozen=True)
class PlannedStep:
    """A step ready to run: its template, and how it is answered (``None`` for both: the run's model)."""

    name: str
    variable: str
    template: Template
    replay: ReplayColumns | None = None
    model: ModelConfig | None = None
    price: Price | None = None

    @property
    def migrated(self) -> bool:
        return self.replay is None and self.model is None


def run_steps(
    steps: Sequence[PlannedStep],
    backend: Backend,
    params: Mapping[str, Any],
    samples: Sequence[Mapping[str, Any]],
    runner: Runner,
    price: Price | None,
    *,
    settings: RunSettings | None = None,
    template: Template | None = None,
    description: str = "",
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """Run every step for every sample; one combined outcome and the per-step columns per sample.

    ``backend``, ``params`` and ``price`` answer the migrated step (``template`` replaces its prompt,
    for prompt variants). A sample whose step fails stops there with that step's error. The combined
    generation is the last step's text with the steps' latencies and tokens summed, and its time to
    first token counted from the request: the earlier steps' latencies plus the last one's.
    """
    contexts = [dict(sample) for sample in samples]
    generations: list[list[Generation]] = [[] for _ in samples]
    errors: list[str | None] = [None] * len(samples)
    columns: list[dict[str, Any]] = [{} for _ in samples]
    last: list[Outcome | None] = [None] * len(samples)
    for step in steps:
        step_backend, step_params, step_price, step_template = _answerer(step, backend, params, price, template, settings)
        try:
            live = [i for i in range(len(samples)) if errors[i] is None]
            requests = [Request(str(contexts[i]["sample_id"]), step_template.render(contexts[i]), contexts[i]) for i in live]
            outcomes = runner.run(step_backend, step_params, requests, description=f"{description} step {step.name}".strip())
        finally:
            if step_backend is not backend:
                step_backend.close()
        for i, outcome in zip(live, outcomes):
            last[i] = outcome
            generation = outcome.generation
            if generation is None:
                errors[i] = f"step '{step.name}': {outcome.error}"
                continue
            contexts[i][step.variable] = generation.text
            generations[i].append(generation)
            columns[i].update({
                f"step.{step.name}.output": generation.text,
                f"step.{step.name}.latency_s": generation.latency_s,
                f"step.{step.name}.input_tokens": generation.input_tokens,
                f"step.{step.name}.output_tokens": generation.output_tokens,
                f"step.{step.name}.cost_usd": _cost(step, step_price, generation),
            })
    combined = []
    for i, sample in enumerate(samples):
        final = last[i]
        assert final is not None  # every sample reached the first step
        request = Request(str(sample["sample_id"]), final.request.messages, contexts[i])
        if errors[i] is not None:
            combined.append(replace(final, request=request, generation=None, error=errors[i]))
        else:
            combined.append(replace(final, request=request, generation=_combine(generations[i])))
        for step in steps:  # every row has every step's columns, empty where the sample stopped before it
            for field in STEP_FIELDS:
                columns[i].setdefault(f"step.{step.name}.{field}", None)
        costs = [columns[i][f"step.{step.name}.cost_usd"] for step in steps]
        columns[i]["cost_usd"] = sum(costs) if errors[i] is None and all(c is not None for c in costs) else None
    return combined, columns


def served_inputs(steps: Sequence[PlannedStep]) -> list[str]:
    """The columns a served pipeline reads: what its called steps' prompts use and no earlier called step produces.

    Served, a replayed step is not called (its recorded outputs exist for the golden samples only):
    its output is one of these inputs, given by the caller as production computes it.

    Example:
        >>> steps = [PlannedStep("rewrite", "query", Template.from_text("rw", "{{question}}"), replay=ReplayColumns("query_rec")),
        ...          PlannedStep("answer", "answer", Template.from_text("qa", "{{context}} Q: {{query}}"))]
        >>> served_inputs(steps)
        ['context', 'query']
    """
    produced: set[str] = set()
    needed: set[str] = set()
    for step in steps:
        if step.replay is None:
            needed |= step.template.variables - produced
            produced.add(step.variable)
    if steps and steps[-1].replay is not None:  # a replayed last step answers with what it is given
        needed.add(steps[-1].variable)
    return sorted(needed)


def serve_steps(
    steps: Sequence[PlannedStep], backend: Backend, params: Mapping[str, Any], fixed: Mapping[str, Backend], row: Mapping[str, Any]
) -> str:
    """One request through the pipeline as it is served: the last step's answer.

    The migrated step calls ``backend`` with ``params``, a fixed-model step calls ``fixed[step.name]``
    with its own parameters, and a replayed step takes its output from ``row`` (see :func:`served_inputs`).

    Example:
        >>> class Upper(Backend):
        ...     def generate(self, messages, params, *, sample=None):
        ...         return Generation(messages[-1]["content"].upper(), latency_s=0.1)
        >>> steps = [PlannedStep("rewrite", "query", Template.from_text("rw", "{{question}}"), replay=ReplayColumns("query_rec")),
        ...          PlannedStep("answer", "answer", Template.from_text("qa", "Q: {{query}}"))]
        >>> serve_steps(steps, Upper("m"), {}, {}, {"query": "revenue 2023"})
        'Q: REVENUE 2023'
    """
    context = dict(row)
    for step in steps:
        if step.replay is not None:
            continue
        if step.migrated:
            step_backend, step_params = backend, params
        else:
            assert step.model is not None
            step_backend, step_params = fixed[step.name], step.model.params.as_dict()
        context[step.variable] = step_backend.generate(step.template.render(context), step_params).text
    return str(context[steps[-1].variable])


def _answerer(
    step: PlannedStep, backend: Backend, params: Mapping[str, Any], price: Price | None, template: Template | None, settings: RunSettings | None
) -> tuple[Backend, Mapping[str, Any], Price | None, Template]:
    if step.migrated:
        return backend, params, price, template or step.template
    if step.replay is not None:
        return ReplayBackend("recorded", step.replay), {}, None, step.template
    assert step.model is not None
    return create_backend(step.model, settings), step.model.params.as_dict(), step.price, step.template


def _cost(step: PlannedStep, price: Price | None, generation: Generation) -> float | None:
    """What the step's call cost now: nothing when replayed (no call is made), unknown without a price."""
    if step.replay is not None:
        return 0.0
    return cost_usd(price, generation.input_tokens, generation.output_tokens) if price else None


def _combine(generations: Sequence[Generation]) -> Generation:
    final = generations[-1]
    before = sum(g.latency_s or 0.0 for g in generations[:-1])
    # A step that recorded no latency or tokens (a replay without those columns) adds nothing; all unknown stays unknown.
    total = lambda values: None if all(v is None for v in values) else sum(v or 0 for v in values)  # noqa: E731
    return Generation(
        text=final.text,
        latency_s=total([g.latency_s for g in generations]),
        ttft_s=None if final.ttft_s is None else before + final.ttft_s,
        input_tokens=total([g.input_tokens for g in generations]),
        output_tokens=total([g.output_tokens for g in generations]),
        finish_reason=final.finish_reason,
    )


def step_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The steps whose columns the rows carry, in order."""
    names = [key.split(".", 2)[1] for key in (rows[0] if rows else {}) if key.startswith("step.") and key.endswith(".output")]
    return list(dict.fromkeys(names))


def step_metrics(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, float]:
    """``step.<name>.latency_p50_s``, ``..._p95_s``, ``input_tokens_mean``, ``output_tokens_mean``, ``cost_usd_total`` per step.

    Example:
        >>> rows = [{"error": None, "step.a.latency_s": 1.0, "step.a.input_tokens": 10, "step.a.output_tokens": 2, "step.a.cost_usd": 0.5},
        ...         {"error": None, "step.a.latency_s": 3.0, "step.a.input_tokens": 20, "step.a.output_tokens": 4, "step.a.cost_usd": 0.25}]
        >>> m = step_metrics(rows, ["a"])
        >>> m["step.a.latency_p50_s"], m["step.a.input_tokens_mean"], m["step.a.cost_usd_total"]
        (2.0, 15.0, 0.75)
    """
    import numpy as np

    result: dict[str, float] = {}
    for name in names:
        key = f"step.{name}"
        answered = [row for row in rows if row.get(f"{key}.output") is not None or row.get(f"{key}.latency_s") is not None]
        latencies = [row[f"{key}.latency_s"] for row in answered if row.get(f"{key}.latency_s") is not None]
        if latencies:
            result[f"{key}.latency_p50_s"] = float(np.percentile(latencies, 50))
            result[f"{key}.latency_p95_s"] = float(np.percentile(latencies, 95))
        for field in ("input_tokens", "output_tokens"):
            values = [row[f"{key}.{field}"] for row in answered if row.get(f"{key}.{field}") is not None]
            if values:
                result[f"{key}.{field}_mean"] = float(np.mean(values))
        costs = [c for row in answered if (c := row.get(f"{key}.cost_usd")) is not None]
        if answered and len(costs) == len(answered):
            result[f"{key}.cost_usd_total"] = float(sum(costs))
    return result
