"""What the ``optimization`` run shows: score progression, the Pareto front, each prompt's lineage with a diff."""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agility_mlflow.optimize._adapter import COMPONENT, AgilityAdapter
from agility_mlflow.optimize._budget import Budget

logger = logging.getLogger(__name__)


class Progress:
    """A GEPA callback: each validation evaluation becomes a step of the optimization run's score curves."""

    def __init__(self, run_id: str, adapter: AgilityAdapter, budget: Budget) -> None:
        self.run_id = run_id
        self.adapter = adapter
        self.budget = budget
        self.best = float("-inf")

    def on_iteration_start(self, event: Any) -> None:
        self.adapter.iteration = int(event["iteration"])

    def on_valset_evaluated(self, event: Any) -> None:
        from agility_mlflow import tracking

        score = float(event["average_score"])
        self.best = max(self.best, score)
        step = int(event["candidate_idx"])
        tracking.log_metric_steps(self.run_id, {
            "validation_score": [(step, score)],
            "best_validation_score": [(step, self.best)],
            "calls_spent": [(step, float(self.budget.total_calls))],
        })


@dataclass
class Summary:
    best_uri: str
    best_validation: float
    seed_validation: float
    n_prompts: int
    uris: list[str]
    metrics: dict[str, float] = field(default_factory=dict)


def load_result(gepa_dir: Path) -> Any:
    """GEPA's result from its saved state (also after a stop by the budget mid-iteration)."""
    from gepa.core.result import GEPAResult
    from gepa.core.state import GEPAState

    if not (gepa_dir / "gepa_state.bin").is_file():
        from agility_mlflow.errors import AgilityError

        raise AgilityError("the budget ran out before the starting prompt was evaluated on the validation split: raise optimize.max_calls")
    return GEPAResult.from_state(GEPAState.load(str(gepa_dir)))


def summarize(result: Any, adapter: AgilityAdapter, run_id: str, budget: Budget) -> Summary:
    """The best prompt by mean validation score (ties: the earliest, so the starting prompt wins a tie)."""
    uris: list[str] = []
    for i, candidate in enumerate(result.candidates):
        parents = [p for p in result.parents[i] if p is not None]
        parent = uris[parents[0]] if parents else None
        uris.append(adapter.register(candidate[COMPONENT], parent))
    scores = list(result.val_aggregate_scores)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    calls = {f"calls_{role}": float(n) for role, n in budget.calls.items()}
    metrics = {
        "best_validation_score": scores[best],
        "seed_validation_score": scores[0],
        "n_prompts": float(len(set(uris))),
        "n_proposals_discarded": float(len(adapter.discarded)),
        "n_trials": float(adapter.trials),
        "calls_total": float(budget.total_calls),
        "cost_usd_total": budget.usd,
        **calls,
    }
    # GEPA may accept a proposal it already holds (another parent proposed the same text): one prompt, counted once.
    return Summary(uris[best], scores[best], scores[0], len(set(uris)), uris, metrics)


def lineage_markdown(result: Any, adapter: AgilityAdapter, summary: Summary) -> str:
    """Each prompt: its version, parent, validation score, cost per sample, p95 latency and a unified diff from its parent."""
    lines = ["# Prompt lineage", ""]
    for i, uri in enumerate(summary.uris):
        record = adapter.prompts.get(uri)
        parents = [p for p in result.parents[i] if p is not None]
        parent_uri = summary.uris[parents[0]] if parents else None
        metrics = record.validation_metrics if record else {}
        marks = " (best)" if uri == summary.best_uri else ""
        lines.append(f"## {i}. {uri}{marks}")
        lines.append(f"- parent: {parent_uri or '(the starting prompt)'}")
        lines.append(f"- validation score: {result.val_aggregate_scores[i]:.4f}")
        if "cost_usd_per_sample" in metrics:
            lines.append(f"- cost per sample: ${metrics['cost_usd_per_sample']:.6f}")
        if "latency_p95_s" in metrics:
            lines.append(f"- latency p95: {metrics['latency_p95_s']:.3f} s")
        if record and record.repairs:
            lines.append(f"- placeholders put back: {', '.join(record.repairs)}")
        if parent_uri:
            before = result.candidates[parents[0]][COMPONENT].splitlines(keepends=True)
            after = result.candidates[i][COMPONENT].splitlines(keepends=True)
            diff = "".join(difflib.unified_diff(before, after, fromfile=parent_uri, tofile=uri))
            lines += ["", "```diff", diff.rstrip("\n") or "(no change)", "```"]
        lines.append("")
    return "\n".join(lines)


def log_artifacts(run_id: str, result: Any, adapter: AgilityAdapter, summary: Summary) -> None:
    """``lineage.md``, ``pareto_front.json``, ``candidates.json``, ``discarded.json``, ``minibatches.json`` (the training
    evaluations the reflection read), GEPA's candidate tree and a score plot."""
    from agility_mlflow import tracking

    front = {str(sample): sorted(summary.uris[i] for i in indices) for sample, indices in result.per_val_instance_best_candidates.items()}
    candidates = [
        {"index": i, "uri": uri, "parents": [summary.uris[p] for p in result.parents[i] if p is not None],
         "validation_score": result.val_aggregate_scores[i], "text": result.candidates[i][COMPONENT],
         "validation_metrics": adapter.prompts[uri].validation_metrics if uri in adapter.prompts else {}}
        for i, uri in enumerate(summary.uris)
    ]
    tracking.log_text(run_id, lineage_markdown(result, adapter, summary), "lineage.md")
    tracking.log_text(run_id, json.dumps(front, indent=1), "pareto_front.json")
    tracking.log_text(run_id, json.dumps(candidates, indent=1), "candidates.json")
    tracking.log_text(run_id, json.dumps(adapter.discarded, indent=1), "discarded.json")
    tracking.log_text(run_id, json.dumps(adapter.minibatches, indent=1), "minibatches.json")
    try:
        tracking.log_text(run_id, result.candidate_tree_html(), "candidate_tree.html")
    except Exception as exc:  # a visualization must not fail an optimization that finished
        logger.warning("candidate tree not drawn: %s", exc)
    figure = _plot(result, summary)
    if figure is not None:
        tracking.log_figure(run_id, figure, "validation_scores.png")


def _plot(result: Any, summary: Summary) -> Any:
    """Validation score of each prompt in discovery order, and the best so far."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    scores = list(result.val_aggregate_scores)
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    axes.plot(range(len(scores)), scores, "o", label="prompt")
    axes.step(range(len(scores)), best, where="post", label="best so far")
    axes.set_xlabel("prompt (discovery order)")
    axes.set_ylabel("validation score")
    axes.legend()
    figure.tight_layout()
    return figure
