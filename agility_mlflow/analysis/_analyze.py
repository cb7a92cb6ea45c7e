"""``agility analyze``: find the runs, analyze each candidate against the source, log the analysis on each run."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agility_mlflow.analysis._categories import (
    CANDIDATE,
    CATEGORY_COLUMNS,
    SOURCE,
    Categorized,
    categorize_offline,
    categorize_with_judge,
    failing_samples,
    taxonomy,
)
from agility_mlflow.analysis._drift import Drift, drift
from agility_mlflow.analysis._slices import SliceResult, slice_results, slice_values
from agility_mlflow.compare import RunRecord
from agility_mlflow.config import Config, load_config
from agility_mlflow.errors import InputError
from agility_mlflow.vocabulary import ANALYSIS_ARTIFACT, RESULTS_ARTIFACT

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "agility-analysis"
OFFLINE = "offline: drift signals + TF-IDF k-means clustering"


@dataclass
class RunAnalysis:
    """One candidate run against the source.

    Attributes:
        run: The candidate run (rows loaded).
        metric: The score that decides which samples failed.
        drift: How its answers drift from the source's (no judge).
        categorized: Each analyzed sample of both sides with its category (``side`` says whose).
        categories: The taxonomy used.
        slices: The slice results when ``decision.slices`` is set.
        judge: ``provider:model_id`` of the judge that named the categories; ``None`` offline.
        questions: Sample id to question, for examples.
    """

    run: RunRecord
    source: RunRecord
    metric: str
    drift: Drift
    categorized: list[Categorized]
    categories: Mapping[str, str]
    slices: list[SliceResult] = field(default_factory=list)
    judge: str | None = None
    questions: Mapping[str, str] = field(default_factory=dict, repr=False)

    def side(self, side: str) -> list[Categorized]:
        return [c for c in self.categorized if c.failure.side == side]

    def counts(self) -> dict[str, tuple[int, int]]:
        """Category to (candidate count, source count), in taxonomy order; ``(no category)`` for unusable judge replies."""
        counts = {name: [0, 0] for name in self.categories}
        for item in self.categorized:
            name = item.category or "(no category)"
            counts.setdefault(name, [0, 0])[0 if item.failure.side == CANDIDATE else 1] += 1
        return {name: (c, s) for name, (c, s) in counts.items()}

    def examples(self, category: str, n: int) -> list[Categorized]:
        """Up to ``n`` of the candidate's samples in ``category``, biggest loss first."""
        items = [c for c in self.side(CANDIDATE) if c.category == category]
        items.sort(key=lambda c: (-(abs((c.failure.other_score or 0.0) - (c.failure.score or 0.0))), c.failure.sample_id))
        return items[:n]

    @property
    def n_errors(self) -> int:
        return sum(1 for row in self.run.rows or () if row.get("error") is not None)

    def judge_totals(self) -> dict[str, float]:
        """The judge's calls, tokens and cost over this analysis (``cost`` left out when unknown)."""
        judged = [c.judge for c in self.categorized if c.judge]
        if not judged:
            return {}
        totals = {
            "judge_calls": float(sum(j["judge_calls"] for j in judged)),
            "judge_cache_hits": float(sum(j["judge_cached"] for j in judged)),
            "judge_input_tokens_total": float(sum(j["judge_input_tokens"] for j in judged)),
            "judge_output_tokens_total": float(sum(j["judge_output_tokens"] for j in judged)),
        }
        costs = [j["judge_cost_usd"] for j in judged]
        if all(cost is not None for cost in costs):
            totals["judge_cost_usd_total"] = float(sum(costs))
        return totals

    def metrics(self) -> dict[str, float]:
        """What is logged on the candidate run: ``drift.*``, ``analysis.n_failing``, ``analysis.category.<name>``, the judge's usage."""
        values = self.drift.metrics()
        values["analysis.n_failing"] = float(len(self.side(CANDIDATE)))
        values["analysis.source_n_failing"] = float(len(self.side(SOURCE)))
        for name, (candidate, _) in self.counts().items():
            if not name.startswith("("):
                values[f"analysis.category.{name}"] = float(candidate)
        values.update({f"analysis.{key}": value for key, value in self.judge_totals().items()})
        return values

    def rows(self) -> list[dict[str, Any]]:
        """The ``analysis.json`` table: the run's results rows with ``error_category``, ``error_reason`` (and
        the source's, ``source_error_category``) on each analyzed sample."""
        mine = {c.failure.sample_id: c for c in self.side(CANDIDATE)}
        theirs = {c.failure.sample_id: c for c in self.side(SOURCE)}
        empty = dict.fromkeys(CATEGORY_COLUMNS)
        out = []
        for row in self.run.rows or ():
            sample_id = str(row["sample_id"])
            own = mine[sample_id].columns() if sample_id in mine else empty
            other = theirs.get(sample_id)
            out.append({**row, **own, "source_error_category": other.category if other else None,
                        "source_error_reason": other.reason if other else None})
        return out

    def feedback_text(self, examples: int = 2) -> str:
        """The analysis as text for a reflection model (see :func:`~agility_mlflow.analysis.feedback_for`)."""
        from agility_mlflow.analysis._feedback import feedback_text

        return feedback_text(self, examples)

    def to_dict(self, examples: int = 2) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "name": self.run.name,
            "metric": self.metric,
            "categorized_by": self.judge or OFFLINE,
            "n_errors": self.n_errors,
            "drift": self.drift.to_dict(),
            "counts": {name: {"candidate": c, "source": s} for name, (c, s) in self.counts().items()},
            "examples": {
                name: [{"sample_id": e.failure.sample_id, "question": self.questions.get(e.failure.sample_id), "reason": e.reason,
                        "cluster": e.cluster, "answer": _row(self.run, e.failure.sample_id).get("output"),
                        "reference": _row(self.run, e.failure.sample_id).get("reference")} for e in self.examples(name, examples)]
                for name in self.counts()
            },
            "slices": [s.to_dict() for s in self.slices],
            "judge": self.judge_totals(),
            "feedback": self.feedback_text(examples),
        }


def _row(run: RunRecord, sample_id: str) -> Mapping[str, Any]:
    return run.rows_by_id().get(sample_id, {})


@dataclass
class Analysis:
    """What ``agility analyze`` returns: the source and one :class:`RunAnalysis` per candidate."""

    experiment: str
    source: RunRecord
    runs: list[RunAnalysis]
    metric: str
    threshold: float | None = None
    examples: int = 2
    output_dir: Path | None = None

    def text(self) -> str:
        """The one-screen terminal summary."""
        from agility_mlflow.analysis._report import analysis_text

        return analysis_text(self)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "source": {"run_id": self.source.run_id, "name": self.source.name}, "metric": self.metric,
                "runs": [r.to_dict(self.examples) for r in self.runs]}


def metric_names(cfg: Config) -> list[str]:
    """The config's metric names (a preset is resolved to names when the config is validated)."""
    return list(cfg.metric_names)


def analysis_metric(cfg: Config) -> str:
    """``analysis.metric``, else the first primary metric; it must be a metric of the config."""
    names = metric_names(cfg)
    metric = cfg.analysis.metric or next(iter(cfg.decision.primary or names), None)
    if metric is None or metric not in names:
        raise InputError(f"{cfg.path.name}: key 'analysis.metric': metric '{metric}' is not in metrics: ({', '.join(names)})")
    return metric


def analyze_run(
    cfg: Config,
    source: RunRecord,
    run: RunRecord,
    *,
    questions: Mapping[str, str],
    slices: Mapping[str, Mapping[str, str]] | None = None,
    judge: Any = None,
) -> RunAnalysis:
    """Drift, categories and slices of one candidate run against the source (both with rows loaded); logs nothing."""
    from agility_mlflow.compare import metric_direction

    metric = analysis_metric(cfg)
    settings = cfg.analysis
    categories = taxonomy(settings.categories)
    assert source.rows is not None and run.rows is not None
    failures = failing_samples(source.rows, run.rows, metric, higher_is_better=metric_direction(metric), threshold=settings.threshold)
    source_rows, run_rows = source.rows_by_id(), run.rows_by_id()
    if judge is not None:
        categorized = categorize_with_judge(failures, source_rows, run_rows, categories, judge, questions=questions, metric=metric,
                                            workers=cfg.run.concurrency)
    else:
        categorized = categorize_offline(failures, source_rows, run_rows, categories, n_clusters=settings.clusters, seed=settings.seed)
    primary = list(cfg.decision.primary or metric_names(cfg))
    slice_list = slice_results(source, run, slices, metrics=primary, decision=cfg.decision) if slices and cfg.decision.slices else []
    return RunAnalysis(run, source, metric, drift(source.rows, run.rows), categorized, categories, slice_list,
                       judge.name if judge is not None else None, questions)


def analyze(
    config: Config | str | os.PathLike[str],
    *,
    run_ids: Sequence[str] = (),
    tracking_uri: str | None = None,
    output: str | os.PathLike[str] | None = None,
    offline: bool = False,
) -> Analysis:
    """Analyze candidate runs against the source and log the results on each run.

    Default runs: the experiment's latest FINISHED source run and its newest candidate run per name
    plus trial runs (``decision.roles``, at most ``decision.max_runs``) on the same dataset. On each
    analyzed run: ``drift.*`` and ``analysis.*`` metrics, the ``analysis.json`` table, and an
    ``error_category`` assessment on each analyzed sample's trace. ``output`` receives
    ``analysis.md`` and ``analysis.json``.

    Args:
        config: A config path or a loaded :class:`~agility_mlflow.config.Config`.
        run_ids: Analyze these candidate or trial runs instead.
        tracking_uri: Overrides the config's ``tracking_uri`` and ``MLFLOW_TRACKING_URI``.
        output: Folder for ``analysis.md`` and ``analysis.json`` (default ``./agility-analysis``).
        offline: Categorize without the judge even when the config has one.

    Raises:
        InputError: No source or candidate runs, a run id that is not a candidate of the experiment,
            an unknown ``analysis.metric``, or a ``decision.slices`` column missing from the dataset.

    Example:
        >>> from agility_mlflow.analysis import analyze
        >>> result = analyze("projects/financial-qa/agility.yaml")  # doctest: +SKIP
        >>> print(result.text())  # doctest: +SKIP
    """
    from mlflow import MlflowClient

    from agility_mlflow import compare, tracking
    from agility_mlflow.cache import ResponseCache
    from agility_mlflow.dataset import load_dataset
    from agility_mlflow.runner import Runner

    cfg = config if isinstance(config, Config) else load_config(config)
    metric = analysis_metric(cfg)
    dataset = load_dataset(cfg.resolve(cfg.dataset.path), cfg.dataset.columns)
    questions = {str(row["sample_id"]): str(row["question"]) for row in dataset.rows if row.get("question") is not None}
    slices = slice_values(dataset.rows, cfg.decision.slices, where=f"{cfg.path.name}: dataset {dataset.path.name}") if cfg.decision.slices else None
    experiment_id = tracking.existing_experiment(cfg, tracking_uri)
    client = MlflowClient()
    source, runs = _runs_to_analyze(cfg, experiment_id, list(run_ids), client)
    source, *runs = compare.load_results([source, *runs], client=client)
    if source.rows is None:
        raise InputError(f"{cfg.path.name}: source run {source.run_id} has no readable {RESULTS_ARTIFACT}")
    unreadable = [run.run_id for run in runs if run.rows is None]
    if unreadable:
        raise InputError(f"{cfg.path.name}: run {unreadable[0]} has no readable {RESULTS_ARTIFACT}")

    judge = None
    if cfg.judge is not None and not offline:
        from agility_mlflow.evaluation import build_judge

        judge = build_judge(cfg, Runner(cfg.run, ResponseCache()))
    try:
        analyses = [analyze_run(cfg, source, run, questions=questions, slices=slices, judge=judge) for run in runs]
    finally:
        if judge is not None:
            judge.backend.close()
    for item in analyses:
        _log(item)
    result = Analysis(cfg.experiment, source, analyses, metric, cfg.analysis.threshold, cfg.analysis.examples,
                      Path(output if output is not None else DEFAULT_OUTPUT))
    _write(result)
    return result


def _runs_to_analyze(cfg: Config, experiment_id: str, run_ids: list[str], client: Any) -> tuple[RunRecord, list[RunRecord]]:
    import mlflow
    from mlflow.exceptions import MlflowException

    from agility_mlflow import compare
    from agility_mlflow.compare import latest_per_candidate, metric_direction, without_optimization_trials

    name = cfg.path.name
    if run_ids:
        runs = []
        for run_id in run_ids:
            try:
                run = client.get_run(run_id)
            except MlflowException:
                raise InputError(f"--run-id {run_id}: no such run in {mlflow.get_tracking_uri()}") from None
            record = compare.to_record(run)
            if run.info.experiment_id != experiment_id or record.role not in ("candidate", "trial"):
                raise InputError(f"--run-id {run_id}: not a candidate or trial run of experiment '{cfg.experiment}' (role '{record.role}')")
            runs.append(record)
        digest = runs[0].params.get("dataset_digest")
    else:
        primary = analysis_metric(cfg)
        runs = latest_per_candidate(without_optimization_trials(compare.candidate_runs(
            experiment_id, roles=cfg.decision.roles, order_metric=primary, higher_is_better=metric_direction(primary), client=client)))
        digest = None
    source = _source_run(experiment_id, digest, client)
    if source is None:
        raise InputError(f"{name}: experiment '{cfg.experiment}' has no FINISHED source run" + (" on the same dataset" if digest else "")
                         + " (tag agility.role=source); run `agility run` on a dataset with the source model's answers first")
    if not run_ids:
        wanted = source.params.get("dataset_digest")
        runs = [run for run in runs if wanted is None or run.params.get("dataset_digest") in (None, wanted)][: cfg.decision.max_runs]
    if not runs:
        raise InputError(f"{name}: experiment '{cfg.experiment}' has no FINISHED {' or '.join(cfg.decision.roles)} runs on the source's dataset to analyze")
    return source, runs


def _source_run(experiment_id: str, digest: str | None, client: Any) -> RunRecord | None:
    from agility_mlflow import compare

    where = compare.finished_with_role("source") + (f" and params.dataset_digest = '{digest}'" if digest else "")
    runs = list(compare.iter_runs([experiment_id], filter_string=where, order_by=["attributes.start_time DESC"], limit=1, client=client))
    return compare.to_record(runs[0]) if runs else None


def _log(item: RunAnalysis) -> None:
    from agility_mlflow import tracking

    run_id = item.run.run_id
    tracking.log_run_data(run_id, {}, item.metrics())
    tracking.replace_table(run_id, item.rows(), ANALYSIS_ARTIFACT)
    labelled = {c.failure.sample_id: (c.category, c.reason) for c in item.side(CANDIDATE) if c.category}
    if labelled:
        tracking.log_category_assessments(run_id, labelled, judge=item.judge)


def _write(result: Analysis) -> None:
    from agility_mlflow.analysis._report import analysis_markdown

    assert result.output_dir is not None
    result.output_dir.mkdir(parents=True, exist_ok=True)
    (result.output_dir / "analysis.md").write_text(analysis_markdown(result), encoding="utf-8")
    (result.output_dir / ANALYSIS_ARTIFACT).write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
