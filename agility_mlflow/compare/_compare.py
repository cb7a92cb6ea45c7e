"""``agility compare``: query the runs, decide each candidate, pick the winner, write and log the report."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from agility_mlflow.compare import _query
from agility_mlflow.compare._decision import (
    QUALITY,
    Verdict,
    check_limits,
    decide,
    metric_direction,
    pick_winner,
    rank,
    stale_verdict,
)
from agility_mlflow.compare._report import build_report
from agility_mlflow.compare._result import Comparison
from agility_mlflow.compare._runs import RunRecord
from agility_mlflow.config import Config, load_config
from agility_mlflow.errors import InputError
from agility_mlflow.vocabulary import (
    ANALYSIS_ARTIFACT,
    DATASET_DIGEST,
    LOWER_IS_BETTER_RUN_METRICS,
    N_SAMPLES,
    RESULTS_ARTIFACT,
    SOURCE_RUN,
    VERDICTS_ARTIFACT,
    WINNER,
    WINNER_NAME,
)

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "agility-report"


def compare(
    config: Config | str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    output: str | os.PathLike[str] | None = None,
    parent_run_id: str | None = None,
) -> Comparison:
    """Decide every candidate against the source, pick the winner, and write and log the report.

    Reads the experiment's latest FINISHED source run and its FINISHED candidate and trial runs
    (``decision.roles``) from the tracking server, best first by the first primary metric. Runs scored
    on another golden dataset than the source run (``dataset_digest``) are ``stale``: listed, never
    decided, never the winner. Runs that
    break a cost, latency or error limit fail on their run metrics alone; the best
    ``decision.max_runs`` of the others are decided on their per-sample results. The report goes to
    ``output`` and to a new run tagged ``agility.role = comparison`` (with ``agility.winner``).

    Args:
        config: A config path or a loaded :class:`~agility_mlflow.config.Config`; its ``decision:``
            section holds the rule.
        tracking_uri: Overrides the config's ``tracking_uri`` and ``MLFLOW_TRACKING_URI``.
        output: Folder for ``report.html``, ``report.md``, the plots and ``verdicts.json``
            (default ``./agility-report``).
        parent_run_id: Nest the comparison run under this run (``mlflow run`` passes ``MLFLOW_RUN_ID``).

    Raises:
        InputError: The experiment, its source run or its candidate runs are missing, or
            ``decision:`` names a metric the config does not score.

    Example:
        >>> from agility_mlflow.compare import compare
        >>> result = compare("projects/financial-qa/agility.yaml", output="agility-report")  # doctest: +SKIP
        >>> print(result.table())  # doctest: +SKIP
        source: source (run 5c1f...)
        verdict       run                 reasons
        fail          local-smollm/fin-qa token_f1 -0.412 [-0.480, -0.344] outside margin 0.05; cost -100%; p95 -0.62 s
        winner: none: no candidate passed, the source stays
        >>> result.winner is None, result.report_html  # doctest: +SKIP
        (True, PosixPath('agility-report/report.html'))
    """
    from mlflow import MlflowClient

    from agility_mlflow import tracking

    cfg = config if isinstance(config, Config) else load_config(config)
    metrics, primary = _check_decision(cfg)
    decision = cfg.decision
    slices = _slice_values(cfg)
    experiment_id = tracking.existing_experiment(cfg, tracking_uri)
    client = MlflowClient()
    source = _query.latest_source_run(experiment_id, client=client)
    if source is None:
        raise InputError(
            f"{cfg.path.name}: experiment '{cfg.experiment}' has no FINISHED source run (tag agility.role=source); "
            "run `agility run` on a dataset with the source model's answers first"
        )
    runs = _query.candidate_runs(
        experiment_id, roles=decision.roles, order_metric=primary[0], higher_is_better=metric_direction(primary[0]), client=client
    )
    runs = latest_per_candidate(without_optimization_trials(runs))
    if not runs:
        raise InputError(f"{cfg.path.name}: experiment '{cfg.experiment}' has no FINISHED {' or '.join(decision.roles)} runs to compare")
    # Pairing is by sample id: a run scored on another version of the golden set is listed, never decided.
    stale_verdicts = [verdict for run in runs if (verdict := stale_verdict(source, run)) is not None]
    stale_ids = {verdict.run.run_id for verdict in stale_verdicts}
    runs = [run for run in runs if run.run_id not in stale_ids]

    # Limits need only run metrics: a run that breaks one fails without downloading its samples. A run on
    # fewer samples than the source is loaded first: its limits are checked on the samples it scored.
    within = [
        _on_fewer_samples(source, run) or all(check.passed for check in check_limits(source, run, decision)) for run in runs
    ]
    over_limit = [run for run, ok in zip(runs, within) if not ok]
    eligible = [run for run, ok in zip(runs, within) if ok]
    to_decide, not_decided = eligible[: decision.max_runs], eligible[decision.max_runs :]
    source, *loaded = _query.load_results([source, *to_decide], client=client)
    _check_source(cfg, source, primary)

    # Over-limit runs were never loaded: decide() fails them on their limits; a loaded run without rows had an unreadable table.
    verdicts = [
        _unreadable(source, run, cfg) if run.rows is None else decide(source, run, metrics=metrics, primary=primary, decision=decision)
        for run in loaded
    ] + [decide(source, run, metrics=metrics, primary=primary, decision=decision) for run in over_limit]
    questions = _questions(cfg, source)
    analyses = _analyses(cfg, source, verdicts, slices, questions)
    verdicts = [_with_slices(verdict, analyses.get(verdict.run.run_id)) for verdict in verdicts]
    ranked = rank(verdicts, tie_break=decision.tie_break, primary_metric=primary[0])
    winner = pick_winner(ranked, tie_break=decision.tie_break, primary_metric=primary[0])
    comparison = Comparison(
        cfg.experiment, source, ranked, winner, metrics, primary, decision, not_decided, questions,
        output_dir=Path(output if output is not None else DEFAULT_OUTPUT), analyses=analyses, stale=stale_verdicts,
    )
    _log_comparison(comparison, experiment_id, parent_run_id)
    return comparison


def _slice_values(cfg: Config) -> dict[str, dict[str, str]] | None:
    """Sample id to its ``decision.slices`` values; a column missing from the dataset is an input error, before any query."""
    if not cfg.decision.slices:
        return None
    from agility_mlflow.analysis import slice_values
    from agility_mlflow.dataset import load_dataset

    dataset = load_dataset(cfg.resolve(cfg.dataset.path), cfg.dataset.columns)
    return slice_values(dataset.rows, cfg.decision.slices, where=f"{cfg.path.name}: dataset {dataset.path.name}")


def _analyses(
    cfg: Config, source: RunRecord, verdicts: list[Verdict], slices: dict[str, dict[str, str]] | None, questions: dict[str, str]
) -> dict[str, Any]:
    """The offline error analysis (drift, categories, slices) of every decided run with per-sample results, by run id.

    No model is called here: categories come from drift signals and clustering (``agility analyze`` asks the judge).
    """
    from agility_mlflow.analysis import analyze_run

    return {
        verdict.run.run_id: analyze_run(cfg, source, verdict.run, questions=questions, slices=slices)
        for verdict in verdicts
        if verdict.run.rows is not None
    }


def _with_slices(verdict: Verdict, analysis: Any) -> Verdict:
    """The verdict with a reason naming every slice where the candidate is worse (its outcome unchanged)."""
    from dataclasses import replace

    from agility_mlflow.analysis import worse_slices_reason

    reason = worse_slices_reason(analysis.slices, verdict.passed) if analysis is not None else None
    return replace(verdict, reasons=(*verdict.reasons, reason)) if reason else verdict


def _check_decision(cfg: Config) -> tuple[list[str], list[str]]:
    """The quality metrics and the primary ones; names outside ``metrics:`` are input errors."""
    metrics = list(cfg.metric_names)
    decision = cfg.decision
    primary = list(decision.primary or metrics)
    if not primary:
        raise InputError(f"{cfg.path.name}: key 'decision.primary': no metric to decide on (metrics: is empty)")
    for key, names in (("decision.primary", primary), ("decision.margins", list(decision.margins))):
        for name in names:
            if name not in metrics:
                raise InputError(f"{cfg.path.name}: key '{key}': metric '{name}' is not in metrics: ({', '.join(metrics)})")
    for name in decision.tie_break:
        if name != QUALITY and name not in metrics and name not in LOWER_IS_BETTER_RUN_METRICS:
            known = ", ".join([QUALITY, *metrics, *sorted(LOWER_IS_BETTER_RUN_METRICS)])
            raise InputError(f"{cfg.path.name}: key 'decision.tie_break': unknown key '{name}' (known: {known})")
    return metrics, primary


def without_optimization_trials(runs: list[RunRecord]) -> list[RunRecord]:
    """An optimization's trials scored prompts on samples the optimizer learned from: only its test run is decided."""
    kept = [run for run in runs if not (run.role == "trial" and run.optimization)]
    if len(kept) < len(runs):
        logger.info("compare: %d trials of agility optimize left out (their optimized prompt's test run is compared)", len(runs) - len(kept))
    return kept


def latest_per_candidate(runs: list[RunRecord]) -> list[RunRecord]:
    """Keep the newest run of each ``agility run`` configuration (run name); every sweep trial stays."""
    newest: dict[str, RunRecord] = {}
    for run in runs:
        if run.role == "candidate" and (run.name not in newest or run.start_time > newest[run.name].start_time):
            newest[run.name] = run
    kept = [run for run in runs if run.role != "candidate" or newest[run.name] is run]
    if len(kept) < len(runs):
        logger.info("compare: %d older runs of the same candidates left out (the newest of each is compared)", len(runs) - len(kept))
    return kept


def _check_source(cfg: Config, source: RunRecord, primary: list[str]) -> None:
    if source.rows is None:
        raise InputError(f"{cfg.path.name}: source run {source.run_id} has no readable {RESULTS_ARTIFACT}")
    for name in primary:
        if not source.scores(name):
            raise InputError(
                f"{cfg.path.name}: key 'decision.primary': the source run {source.run_id} has no '{name}' scores "
                "(was it scored with other metrics?)"
            )


def _on_fewer_samples(source: RunRecord, run: RunRecord) -> bool:
    return run.metrics.get(N_SAMPLES, math.inf) < source.metrics.get(N_SAMPLES, -math.inf)


def _unreadable(source: RunRecord, run: RunRecord, cfg: Config) -> Verdict:
    limits = check_limits(source, run, cfg.decision)
    reasons = (*[c.text for c in limits if c.text], f"no readable {RESULTS_ARTIFACT}: quality not compared")
    return Verdict(run, "fail", reasons, (), limits)


def _questions(cfg: Config, source: RunRecord) -> dict[str, str]:
    """Sample id to question from the golden dataset, for the report's worst samples.

    None when the config's dataset is no longer the one the source run scored: its questions may differ.
    """
    from agility_mlflow.dataset import load_dataset

    dataset = load_dataset(cfg.resolve(cfg.dataset.path), cfg.dataset.columns)
    recorded = source.params.get(DATASET_DIGEST)
    if recorded is not None and recorded != dataset.digest:
        logger.warning(
            "compare: %s (digest %s) changed since the source run (dataset %s): its questions are left out of the report",
            dataset.path.name, dataset.digest, recorded,
        )
        return {}
    return {str(row["sample_id"]): str(row["question"]) for row in dataset.rows if row.get("question") is not None}


def _log_comparison(comparison: Comparison, experiment_id: str, parent_run_id: str | None) -> None:
    """The comparison run: the decision as params, the counts as metrics, the verdict as tags, the report as artifacts."""
    from agility_mlflow import tracking

    winner = comparison.winner
    tags = {tracking.ROLE: "comparison", SOURCE_RUN: comparison.source.run_id, WINNER: winner.run.run_id if winner else "none"}
    if winner:
        tags[WINNER_NAME] = winner.run.name
    with tracking.parent_in_experiment(parent_run_id, experiment_id) as parent, \
            tracking.evaluation_run(experiment_id, "comparison", tags, parent_run_id=parent) as run_id:
        comparison.run_id = run_id
        tracking.log_run_data(run_id, _params(comparison), _metrics(comparison))
        assert comparison.output_dir is not None
        paths = build_report(comparison).write(comparison.output_dir)
        verdicts = comparison.output_dir / VERDICTS_ARTIFACT
        verdicts.write_text(json.dumps(comparison.to_dict(), indent=2, default=str), encoding="utf-8")
        analysis = comparison.output_dir / ANALYSIS_ARTIFACT
        analysis.write_text(json.dumps([a.to_dict() for a in comparison.analyses.values()], indent=2, default=str), encoding="utf-8")
        tracking.log_artifacts(run_id, [*paths, verdicts, analysis])


def _params(comparison: Comparison) -> dict[str, Any]:
    d = comparison.decision
    params: dict[str, Any] = {
        "source_run_id": comparison.source.run_id,
        "primary": comparison.primary,
        "margins": {m: d.margins.get(m, d.margin) for m in comparison.metrics},
        "confidence": d.confidence,
        "power": d.power,
        "method": d.method,
        "bootstrap_resamples": d.bootstrap_resamples,
        "seed": d.seed,
        "min_samples": d.min_samples,
        "max_error_rate": d.max_error_rate,
        "tie_break": d.tie_break,
        "roles": d.roles,
        "max_runs": d.max_runs,
    }
    for key in ("max_cost_per_sample_usd", "max_latency_p95_s", "max_cost_ratio", "max_latency_p95_ratio"):
        if getattr(d, key) is not None:
            params[key] = getattr(d, key)
    return params


def _metrics(comparison: Comparison) -> dict[str, float]:
    counts = comparison.counts()
    metrics = {
        "n_decided": float(len(comparison.verdicts)),
        "n_pass": float(counts["pass"]),
        "n_fail": float(counts["fail"]),
        "n_insufficient": float(counts["insufficient"]),
        "n_not_decided": float(len(comparison.not_decided)),
        "n_stale": float(len(comparison.stale)),
    }
    if comparison.winner:
        for c in comparison.winner.comparisons:
            if c.difference is not None and c.ci_low is not None and c.ci_high is not None:  # all three or none
                metrics.update({f"winner_{c.metric}_diff": c.difference, f"winner_{c.metric}_ci_low": c.ci_low, f"winner_{c.metric}_ci_high": c.ci_high})
    return metrics
