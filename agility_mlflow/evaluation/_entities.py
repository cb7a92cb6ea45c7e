"""What an evaluation is made of: the configurations to run, the prepared project, a result and a run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agility_mlflow.config import Config, ModelConfig
from agility_mlflow.dataset import GoldenDataset
from agility_mlflow.pipeline import PlannedStep
from agility_mlflow.pricing import Price
from agility_mlflow.prompts import Template
from agility_mlflow.runner import Outcome
from agility_mlflow.scoring import Scorer
from agility_mlflow.vocabulary import INPUT_DIGEST as INPUT_DIGEST

CONTEXT = "context"
HUMAN_SCORE = "human_score_source_llm"


@dataclass(frozen=True)
class PlannedRun:
    """One run's worth of work: a role, a model with its inference parameters, and a prompt."""

    role: str
    name: str
    model: ModelConfig
    template: Template
    steps: tuple[PlannedStep, ...] = ()
    """A multi-step application's steps; ``template`` is then the migrated step's prompt."""

    @property
    def run_name(self) -> str:
        return self.name if self.role == "source" else f"{self.name}/{self.template.name}"


@dataclass
class Project:
    """A validated config with its dataset, templates and metrics, ready to run."""

    config: Config
    dataset: GoldenDataset
    templates: dict[str, Template]
    metrics: list[Scorer]
    configurations: list[PlannedRun]
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Replayed models' rows of their ``path:`` files by sample id, by configuration name."""

    @property
    def judged_metrics(self) -> list[Scorer]:
        return [m for m in self.metrics if m.needs_judge]


@dataclass
class EvaluationResult:
    """Per-sample rows (the ``eval_results.json`` table) and the run's aggregate metrics."""

    rows: list[dict[str, Any]]
    metrics: dict[str, float]
    outcomes: list[Outcome] = field(repr=False, default_factory=list)
    price: Price | None = None


@dataclass
class RunSummary:
    run_id: str
    role: str
    name: str
    prompt_uri: str
    metrics: dict[str, float]
