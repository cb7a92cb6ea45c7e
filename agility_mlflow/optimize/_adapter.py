"""agility's side of GEPA's adapter protocol: every evaluation and proposal goes through the runner.

- ``evaluate`` scores a candidate prompt on a batch of training or validation samples with
  :mod:`agility_mlflow.evaluation` (the runner's cache, retries, concurrency and prices; the judge
  for judged metrics) and logs it as a ``trial`` child run of the optimization run (tagged with its split).
- ``make_reflective_dataset`` turns the failing samples' rows into what the reflection reads: inputs,
  answer, reference, each metric's result, the judge's reasons, the objective's other terms and the error category
  error analysis gives it (offline: no call).
- ``propose_new_texts`` asks the reflection model (any backend, through the runner), reads its reply
  leniently, puts renamed placeholders back and dropped ones after the instruction, discards a
  proposal that invents one, and registers each kept proposal as a new Prompt Registry version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gepa.core.adapter import EvaluationBatch

from agility_mlflow.backends import Backend
from agility_mlflow.config import ModelConfig
from agility_mlflow.dataset import SOURCE_ANSWER, references
from agility_mlflow.errors import AgilityError, BudgetExhausted
from agility_mlflow.evaluation import EvaluationResult, PlannedRun, Project, evaluate, evaluate_into_run
from agility_mlflow.optimize._budget import Budget
from agility_mlflow.optimize._objective import SampleObjective
from agility_mlflow.optimize._reflection import parse_proposal, render_reflection, repaired
from agility_mlflow.prompts import Template
from agility_mlflow.runner import Request, Runner
from agility_mlflow.vocabulary import EVALUATION as EVALUATION_TAG
from agility_mlflow.vocabulary import ITERATION as ITERATION_TAG
from agility_mlflow.vocabulary import OPTIMIZATION as OPTIMIZATION_TAG
from agility_mlflow.vocabulary import OPTIMIZATION_KEY as KEY_TAG
from agility_mlflow.vocabulary import PARENT_VERSION, TRAIN_SCORE, VALIDATION_SCORE
from agility_mlflow.vocabulary import SPLIT as SPLIT_TAG

logger = logging.getLogger(__name__)

COMPONENT = "prompt"
"""GEPA's name for the one text it evolves: the template's user message (the system message is kept)."""


@dataclass
class PromptRecord:
    """One prompt the optimization evaluated: its registry version, parent and scores."""

    uri: str
    text: str
    parent: str | None
    repairs: list[str] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    validation: float | None = None
    validation_metrics: dict[str, float] = field(default_factory=dict)
    """The run metrics of its validation evaluation (quality, cost per sample, p95 latency)."""


@dataclass
class Context:
    """What every evaluation and proposal of one optimization shares."""

    project: Project
    configuration: PlannedRun
    backend: Backend
    runner: Runner
    budget: Budget
    objective: SampleObjective
    registry_name: str
    variables: tuple[str, ...]
    validation_ids: frozenset[str]
    test_ids: frozenset[str]
    experiment_id: str
    optimization_run_id: str
    key: str
    feedback: tuple[str, ...]
    reflection_backend: Backend
    reflection_model: ModelConfig
    reflection_template: str
    categories: Mapping[str, str] = field(default_factory=dict)
    """Error analysis's taxonomy (``analysis.categories``, else the built-in one): each failing sample gets one."""
    analysis_seed: int = 0
    logged: dict[str, str] = field(default_factory=dict)
    """Evaluation key -> trial run id, for evaluations already logged (also by a killed earlier process)."""


class AgilityAdapter:
    """A :class:`gepa.core.adapter.GEPAAdapter` over agility's evaluation, runner and Prompt Registry."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.prompts: dict[str, PromptRecord] = {}
        self.by_text: dict[str, str] = {}
        self.discarded: list[dict[str, Any]] = []
        self.minibatches: list[dict[str, Any]] = []
        self.trials = len(context.logged)
        self.iteration = 0
        """GEPA's iteration, set by :class:`~agility_mlflow.optimize._report.Progress`: it seeds the reflection call."""

    # -- prompts ---------------------------------------------------------------------------------------

    def register(self, text: str, parent: str | None, repairs: Sequence[str] = ()) -> str:
        """The ``prompts:/NAME/N`` of ``text``, registering it (tagged with its lineage) if new."""
        from agility_mlflow import tracking

        if text in self.by_text:
            return self.by_text[text]
        ctx = self.context
        template = Template.from_text(ctx.registry_name, text, ctx.configuration.template.system, origin=f"optimization {ctx.optimization_run_id}",
                                      format=ctx.configuration.template.format)
        tags = {OPTIMIZATION_TAG: ctx.optimization_run_id, KEY_TAG: ctx.key}
        if parent:
            tags[PARENT_VERSION] = parent
        uri = tracking.register_prompt(template, tags=tags)
        self.by_text[text] = uri
        self.prompts.setdefault(uri, PromptRecord(uri, text, parent, list(repairs)))
        return uri

    def template(self, text: str) -> Template:
        ctx = self.context
        return Template.from_text(ctx.registry_name, text, ctx.configuration.template.system, origin=self.register(text, None),
                                  format=ctx.configuration.template.format)

    # -- GEPA protocol ---------------------------------------------------------------------------------

    def evaluate(self, batch: list[dict[str, Any]], candidate: dict[str, str], capture_traces: bool = False) -> EvaluationBatch:
        ctx = self.context
        ids = [str(sample["sample_id"]) for sample in batch]
        leaked = [i for i in ids if i in ctx.test_ids]
        if leaked:  # held-out discipline: the optimizer never sees a test sample
            raise AgilityError(f"test sample '{leaked[0]}' reached the optimizer")
        split = "validation" if set(ids) <= ctx.validation_ids else "train"
        text = candidate[COMPONENT]
        uri = self.register(text, None)
        result = self._evaluate(text, uri, ids, split)
        by_id = {str(row["sample_id"]): row for row in result.rows}
        rows = [by_id[i] for i in ids]
        scores = [ctx.objective.score(row) for row in rows]
        record = self.prompts[uri]
        mean = sum(scores) / len(scores)
        if split == "validation":
            record.validation = mean
            record.validation_metrics = dict(result.metrics)
            self._tag(uri, {VALIDATION_SCORE: f"{mean:.6g}"})
        else:
            record.train.append(mean)
            self._tag(uri, {TRAIN_SCORE: f"{sum(record.train) / len(record.train):.6g}"})
        samples = {str(sample["sample_id"]): sample for sample in batch}
        return EvaluationBatch(
            outputs=[row["output"] for row in rows],
            scores=scores,
            trajectories=[{"row": row, "sample": samples[i]} for row, i in zip(rows, ids)] if capture_traces else None,
            objective_scores=[ctx.objective.parts(row) for row in rows],
        )

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: EvaluationBatch, components_to_update: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        ctx = self.context
        traces = list(zip(eval_batch.trajectories or [], eval_batch.scores))
        perfect = ctx.objective.perfect
        failing = [trace for trace, score in traces if perfect is None or score < perfect] or [trace for trace, _ in traces]
        categories = self._categories(failing)
        records = [self._example(trace["row"], trace["sample"], categories.get(str(trace["row"]["sample_id"]))) for trace in failing]
        return {name: records for name in components_to_update}

    def propose_new_texts(
        self, candidate: dict[str, str], reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]], components_to_update: list[str]
    ) -> dict[str, str]:
        ctx = self.context
        current = candidate[COMPONENT]
        parent = self.register(current, None)
        message = render_reflection(current, reflective_dataset.get(COMPONENT, []), ctx.reflection_template)
        # The iteration seeds the call: a repeated input still samples a new proposal (and a resumed iteration hits the cache).
        params = {**ctx.reflection_model.params.as_dict(), "seed": self.iteration}
        outcome = ctx.runner.call(ctx.reflection_backend, params, Request("reflection", [{"role": "user", "content": message}], {}))
        if outcome.generation is None:
            logger.warning("reflection call failed: %s", outcome.error)
            return {}
        proposal = parse_proposal(outcome.generation.text)
        try:
            # In the starting template's format: an f-string stays an f-string, with the same fields; malformed text is discarded too.
            text, repairs = repaired(proposal, ctx.variables, f"proposal from {parent}", ctx.configuration.template.format)
        except AgilityError as exc:
            logger.warning("%s: discarded, never evaluated", exc)
            self.discarded.append({"parent": parent, "reason": str(exc), "proposal": proposal})
            return {}
        if text == current:
            return {}
        for repair in repairs:
            logger.info("proposal from %s: placeholder put back: %s", parent, repair)
        self.register(text, parent, repairs)
        return {COMPONENT: text}

    # -- helpers ---------------------------------------------------------------------------------------

    def _evaluate(self, text: str, uri: str, ids: Sequence[str], split: str) -> EvaluationResult:
        """Score ``text`` on samples ``ids`` into a ``trial`` child run of the optimization run.

        Training minibatches (what the reflection reads) and validation evaluations (what ranks a
        prompt) are both logged, tagged with their split; they are children of the optimization run,
        so the experiment's top level stays one row per optimization. An evaluation already logged
        (GEPA repeats a minibatch, or a resume replays one) is scored again from the cache without a new run.
        """
        ctx = self.context
        configuration = dataclasses.replace(ctx.configuration, role="trial", template=self.template(text))
        project = dataclasses.replace(ctx.project, dataset=ctx.project.dataset.subset(ids))
        key = hashlib.sha256(f"{text}\x00{','.join(sorted(ids))}".encode()).hexdigest()[:16]
        captured: list[EvaluationResult] = []
        run_id = ctx.logged.get(key)
        if run_id is not None:
            result = evaluate(configuration, ctx.backend, project.dataset, project.metrics, ctx.runner, project.config.price_overrides())
        else:
            self.trials += 1
            tags = {OPTIMIZATION_TAG: ctx.optimization_run_id, KEY_TAG: ctx.key, SPLIT_TAG: split, EVALUATION_TAG: key,
                    ITERATION_TAG: str(self.iteration)}
            summary = evaluate_into_run(
                project, configuration, ctx.backend, ctx.runner, uri, ctx.experiment_id, parent_run_id=ctx.optimization_run_id,
                run_name=f"trial-{self.trials}-{split}", tags=tags, on_result=lambda result, run_id: captured.append(result),
            )
            run_id = ctx.logged[key] = summary.run_id
            result = captured[0]
        if ctx.budget.refused:  # a judge library may have swallowed the refusal: never use a partial evaluation
            raise BudgetExhausted("the call budget ran out during an evaluation")
        if split == "train":
            self.minibatches.append({"prompt": uri, "sample_ids": list(ids), "scores": [ctx.objective.score(r) for r in result.rows],
                                     "new_calls": int(len(result.rows) - result.metrics.get("n_cache_hits", 0)), "run_id": run_id,
                                     "iteration": self.iteration})
        return result

    def _categories(self, traces: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
        """Error analysis of the failing answers: sample id -> (category, reason).

        Offline and free (no model call, so no budget spent): the drift signals against the source's
        recorded answer, when the dataset has it, and a clustering of the failing answers
        (:func:`agility_mlflow.analysis.categorize_offline`, the same as ``agility analyze`` without a judge).
        """
        from agility_mlflow.analysis import Failure, categorize_offline

        ctx = self.context
        rows = {str(t["row"]["sample_id"]): t["row"] for t in traces if t["row"].get("error") is None}
        sources = {
            sample_id: {"sample_id": sample_id, "output": t["sample"][SOURCE_ANSWER], "reference": t["row"].get("reference"), "error": None}
            for t in traces if (sample_id := str(t["row"]["sample_id"])) in rows and t["sample"].get(SOURCE_ANSWER)
        }
        failures = [Failure(i, "candidate", ctx.objective.score(row), None, "below the objective's best") for i, row in rows.items()]
        found = categorize_offline(failures, sources, rows, ctx.categories, seed=ctx.analysis_seed) if failures else []
        return {c.failure.sample_id: (c.category, c.reason) for c in found if c.category}

    def _example(self, row: Mapping[str, Any], sample: Mapping[str, Any], category: tuple[str, str] | None = None) -> dict[str, Any]:
        """One failing sample as the reflection reads it: inputs, answer, and feedback (reference, each metric's result,
        the judge's reason, the objective's other terms and the error category)."""
        ctx = self.context
        inputs = {name: str(sample.get(name)) for name in ctx.variables}
        answer = row.get("output") if row.get("error") is None else f"(no answer: {row['error']})"
        lines = []
        refs = references(sample)
        if refs:
            lines.append("Reference answer: " + " | ".join(refs))
        for name in ctx.feedback:
            if name not in row:
                continue
            value = row.get(name)
            line = f"{name}: {'not applicable' if value is None else _number(value) if isinstance(value, (int, float)) else value}"
            reason = row.get(f"{name}_reasoning")
            if reason:
                line += f" (judge's reason: {reason})"
            lines.append(line)
        # Terms of a weighted objective that are no quality metric (answer length, latency, cost): the reflection
        # must see them to make answers shorter or cheaper.
        terms = [(column, weight) for column, weight in ctx.objective.weights.items() if ctx.objective.names[column] not in ctx.feedback]
        for column, weight in terms:
            value = row.get(column)
            if isinstance(value, (int, float)):
                lines.append(f"{column}: {_number(value)} (weight {weight:g} in the objective)")
        if len(ctx.objective.weights) > 1:
            lines.append(f"Objective score: {_number(ctx.objective.score(row))} (higher is better)")
        if category is not None:
            name, reason = category
            description = ctx.categories.get(name, "")
            lines.append(f"Error category: {name}" + (f" ({description.rstrip('.')})" if description else "") + f": {reason}")
        return {"Inputs": inputs, "Generated Outputs": answer or "", "Feedback": "\n".join(lines)}

    def _tag(self, uri: str, tags: Mapping[str, str]) -> None:
        from agility_mlflow import tracking

        tracking.set_prompt_version_tags(uri, tags)


def _number(value: float) -> str:
    """``0``, ``1``, ``0.962``, ``23``: a score or count as the reflection reads it."""
    return f"{value:.4g}"
