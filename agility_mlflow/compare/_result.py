"""What a comparison returns: the source, every verdict, the winner, and where the report went."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agility_mlflow.compare._decision import Verdict
from agility_mlflow.compare._runs import RunRecord
from agility_mlflow.config import DecisionConfig


@dataclass
class Comparison:
    """The outcome of ``agility compare``.

    Attributes:
        experiment: The experiment name.
        source: The source run (latest FINISHED run tagged ``agility.role = source``).
        verdicts: One per decided candidate, best first (the winner, if any, leads).
        winner: The best passing verdict; ``None`` when no candidate passes (the source stays).
        metrics: Quality metrics compared.
        primary: The metrics that decide.
        decision: The ``decision:`` settings applied.
        not_decided: Runs ranked below the ``decision.max_runs`` best by the first primary metric.
        stale: ``stale`` verdicts of runs scored on another dataset than the source run: not decided.
        questions: Sample id to question, for the report's worst samples.
        run_id: The comparison run (``agility.role = comparison``), once logged.
        output_dir: Where ``report.html`` and ``report.md`` were written.
        analyses: Run id to its error analysis (drift, categories, slice results).
    """

    experiment: str
    source: RunRecord
    verdicts: list[Verdict]
    winner: Verdict | None
    metrics: list[str]
    primary: list[str]
    decision: DecisionConfig
    not_decided: list[RunRecord] = field(default_factory=list)
    questions: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    output_dir: Path | None = None
    analyses: Mapping[str, Any] = field(default_factory=dict)
    """Run id to its offline :class:`~agility_mlflow.analysis.RunAnalysis` (drift, categories, slices)."""
    stale: list[Verdict] = field(default_factory=list)

    def verdict(self, name_or_run_id: str) -> Verdict:
        """The verdict of the run with this name or id."""
        for verdict in [*self.verdicts, *self.stale]:
            if name_or_run_id in (verdict.run.name, verdict.run.run_id):
                return verdict
        raise KeyError(name_or_run_id)

    @property
    def report_html(self) -> Path | None:
        return self.output_dir / "report.html" if self.output_dir else None

    def counts(self) -> dict[str, int]:
        counts = {"pass": 0, "fail": 0, "insufficient": 0}
        for verdict in self.verdicts:
            counts[verdict.outcome] += 1
        return counts

    def winner_line(self) -> str:
        if self.winner is None:
            return "winner: none: no candidate passed, the source stays"
        return f"winner: {self.winner.run.name} (run {self.winner.run.run_id})"

    def table(self) -> str:
        """The verdicts as terminal text: one line per candidate, then the winner."""
        width = max([len(v.run.name) for v in [*self.verdicts, *self.stale]] + [len("run")])
        lines = [f"source: {self.source.name} (run {self.source.run_id})", f"{'verdict':<13} {'run':<{width}}  reasons"]
        for verdict in [*self.verdicts, *self.stale]:
            lines.append(f"{verdict.outcome:<13} {verdict.run.name:<{width}}  {'; '.join(verdict.reasons)}")
        if self.not_decided:
            lines.append(
                f"{len(self.not_decided)} more runs ranked below the best {self.decision.max_runs} by {self.primary[0]} "
                "were not decided (decision.max_runs)"
            )
        lines.append(self.winner_line())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the comparison run's ``verdicts.json``); stale runs close the verdicts list."""
        return {
            "experiment": self.experiment,
            "source": {"run_id": self.source.run_id, "name": self.source.name},
            "winner": self.winner.run.run_id if self.winner else None,
            "metrics": self.metrics,
            "primary": self.primary,
            "decision": self.decision.model_dump(mode="json"),
            "verdicts": [self._verdict_dict(v) for v in [*self.verdicts, *self.stale]],
            "not_decided": [r.run_id for r in self.not_decided],
        }

    def _verdict_dict(self, verdict: Verdict) -> dict[str, Any]:
        """The verdict's summary with its per-slice results (``decision.slices``)."""
        analysis = self.analyses.get(verdict.run.run_id)
        return {**verdict.to_dict(), "slices": [s.to_dict() for s in analysis.slices] if analysis is not None else []}
