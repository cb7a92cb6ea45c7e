"""Human review: export the samples of a run a person should read, import their scores back.

The export is a CSV a subject-matter expert fills in (``human_score``, ``human_reasoning``); it holds
the worst samples by a metric, the samples where two scores disagree most (e.g. the LLM judge and
``token_f1``), and a random slice, each with the reason it was picked. The import logs the scores on
the run (``human_score_mean``, ``n_human_scores``, the ``human_review.json`` table), as human
assessments on the samples' traces so the MLflow UI shows them beside the answer, and, when the
run has judge scores, the judge's agreement with the humans (``judge_human_spearman``).

Example:
    >>> export_review("3f2a...", "review.csv", metric="token_f1", worst=10, sample=10)  # doctest: +SKIP
    20
    >>> import_review("3f2a...", "review.csv")["human_score_mean"]  # doctest: +SKIP
    3.4
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from agility_mlflow.errors import InputError
from agility_mlflow.vocabulary import (
    ANALYSIS_ARTIFACT,
    BOOKKEEPING_COLUMNS,
    ERROR,
    HUMAN_REVIEW_ARTIFACT,
    OUTPUT,
    REFERENCE,
    RESULTS_ARTIFACT,
    SAMPLE_ID,
)

SCORE, REASONING, PICKED = "human_score", "human_reasoning", "picked_because"
_SHOWN = [SAMPLE_ID, OUTPUT, REFERENCE, ERROR]
CATEGORY = "error_category"
_ANALYSIS = [CATEGORY, "error_reason"]


def export_review(
    run_id: str,
    output: str | Path,
    *,
    metric: str | None = None,
    worst: int = 10,
    disagree: tuple[str, str] | None = None,
    most_disagreeing: int = 10,
    sample: int = 10,
    seed: int = 0,
    per_category: int = 0,
) -> int:
    """Write the samples of run ``run_id`` worth a human look to ``output`` (CSV); returns how many.

    When ``agility analyze`` has analyzed the run, its ``error_category`` and ``error_reason`` columns come
    along, so reviewers confirm or correct the categories rather than read raw rows.

    Args:
        metric: Pick the ``worst`` samples of this column (errors first): the lowest values, or the
            highest for a lower-is-better column (``answer_length``, hallucination, latency, cost).
        disagree: Two score columns; pick the ``most_disagreeing`` samples where their ranks differ most,
            each ranked from worst to best by its own direction.
        sample: Add this many random samples of the rest (``seed`` makes it repeatable).
        per_category: Pick up to this many samples of each error category (needs ``agility analyze`` first).
    """
    table = _with_categories(_results(run_id), run_id)
    picked: dict[str, str] = {}
    if per_category:
        if CATEGORY not in table:
            raise InputError(f"run {run_id} has no error categories to pick by: run `agility analyze` on it first")
        for category, group in table.dropna(subset=[CATEGORY]).groupby(CATEGORY, sort=True):
            for sample_id in group["sample_id"].head(per_category):
                picked.setdefault(sample_id, f"error category {category}")
    if metric is not None:
        _require(table, [metric], run_id)
        ordered = table.assign(_errored=table["error"].notna()).sort_values(["_errored", metric], ascending=[False, _higher_is_better(metric)])
        for sample_id in ordered["sample_id"].head(worst):
            picked.setdefault(sample_id, f"worst {metric}")
    if disagree is not None:
        _require(table, list(disagree), run_id)
        # Ranked from worst to best by each column's direction, so a terse answer and a high score agree.
        ranks = pd.DataFrame({name: table[name].rank(pct=True, ascending=_higher_is_better(name)) for name in disagree})
        gap = (ranks[disagree[0]] - ranks[disagree[1]]).abs()
        for sample_id in table.loc[gap.sort_values(ascending=False).index, "sample_id"].head(most_disagreeing):
            picked.setdefault(sample_id, f"{disagree[0]} and {disagree[1]} disagree")
    rest = table[~table["sample_id"].isin(picked)]
    for sample_id in rest.sample(n=min(sample, len(rest)), random_state=seed)["sample_id"]:
        picked[sample_id] = "random"
    chosen = table.set_index("sample_id").loc[list(picked)].reset_index()
    scores = [c for c in table.columns if c not in _SHOWN and c not in BOOKKEEPING_COLUMNS and c not in _ANALYSIS]
    frame = chosen[[c for c in [*_SHOWN, *_ANALYSIS] if c in chosen] + scores].assign(**{PICKED: list(picked.values()), SCORE: "", REASONING: ""})
    frame.to_csv(output, index=False)
    return len(frame)


def _higher_is_better(column: str) -> bool:
    """A score column's direction (the one rule: :func:`agility_mlflow.scoring.higher_is_better`); unknown: higher."""
    from agility_mlflow.scoring import higher_is_better

    try:
        return higher_is_better(column)
    except InputError:
        return True  # a column of the user's own (a human score): higher is better


def import_review(run_id: str, path: str | Path, *, judge: str | None = "llm_judge") -> dict[str, float]:
    """Log the human scores of a filled-in review CSV on run ``run_id``; returns the metrics logged.

    Rows with an empty ``human_score`` are skipped (not reviewed yet). ``judge`` names the column
    of the run's results to compare the human scores with.
    """
    from agility_mlflow import tracking

    path = Path(path)
    reviewed = _read_review(path)
    table = _results(run_id)
    unknown = sorted(set(reviewed["sample_id"]) - set(table["sample_id"]))
    if unknown:
        raise InputError(f"{path.name}: sample_id '{unknown[0]}' is not a sample of run {run_id}")
    metrics = {"human_score_mean": float(reviewed[SCORE].mean()), "n_human_scores": float(len(reviewed))}
    if judge is not None and judge in table:
        paired = reviewed.merge(table[["sample_id", judge]], on="sample_id").dropna(subset=[judge])
        if len(paired) >= 3:
            from agility_mlflow.scoring import JUDGE_SCALE, agreement

            # The judge's agreement with the reviewers (Spearman and Cohen's kappa), as calibration from the dataset gives it.
            found = agreement(list(paired[judge]), list(paired[SCORE]), judge_scale=JUDGE_SCALE if judge == "llm_judge" else None)
            metrics.update({k: v for k, v in found.items() if k != "judge_human_n"})
    tracking.log_run_data(run_id, {}, metrics)
    tracking.log_results_table(run_id, reviewed.to_dict("records"), artifact_file=HUMAN_REVIEW_ARTIFACT)
    tracking.log_human_assessments(run_id, {row["sample_id"]: (row[SCORE], row[REASONING]) for row in reviewed.to_dict("records")})
    return metrics


def _results(run_id: str) -> pd.DataFrame:
    import tempfile

    from mlflow.exceptions import MlflowException

    from agility_mlflow import tracking

    try:
        with tempfile.TemporaryDirectory() as scratch:
            rows = tracking.read_table(run_id, RESULTS_ARTIFACT, directory=scratch)
    except (MlflowException, OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"run {run_id}: no {RESULTS_ARTIFACT} to review ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not rows:
        raise InputError(f"run {run_id}: {RESULTS_ARTIFACT} has no samples to review")
    table = pd.DataFrame(rows)
    table[SAMPLE_ID] = table[SAMPLE_ID].astype(str)
    return table


def _with_categories(table: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """``table`` with the run's ``error_category`` and ``error_reason`` from ``analysis.json``, when it was analyzed."""
    from mlflow import MlflowClient

    from agility_mlflow.compare import read_results

    client = MlflowClient()
    if ANALYSIS_ARTIFACT not in {f.path for f in client.list_artifacts(run_id)}:
        return table
    rows = read_results(run_id, client=client, artifact=ANALYSIS_ARTIFACT)
    if not rows:
        return table
    categories = pd.DataFrame([{"sample_id": str(r["sample_id"]), **{c: r.get(c) for c in _ANALYSIS}} for r in rows])
    return table.merge(categories, on="sample_id", how="left")


def _require(table: pd.DataFrame, columns: list[str], run_id: str) -> None:
    for column in columns:
        if column not in table:
            known = ", ".join(c for c in table.columns if c not in _SHOWN and c not in BOOKKEEPING_COLUMNS)
            raise InputError(f"run {run_id} has no '{column}' column to pick samples by (scores: {known})")


def _read_review(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"sample_id": str, REASONING: str}, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path.name}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    for column in ("sample_id", SCORE):
        if column not in frame:
            raise InputError(f"{path.name}: missing column '{column}'")
    frame = frame[frame[SCORE].astype(str).str.strip() != ""].copy()
    scores = pd.to_numeric(frame[SCORE], errors="coerce")
    bad = scores.isna() | ~scores.map(lambda v: math.isfinite(v) if isinstance(v, float) else True)
    if bad.any():
        row = int(bad.idxmax()) + 2  # +1 for the header, +1 to count from 1
        raise InputError(f"{path.name}, row {row}, column '{SCORE}': '{frame.loc[bad.idxmax(), SCORE]}' is not a number")
    frame[SCORE] = scores.astype(float)
    if REASONING not in frame:
        frame[REASONING] = ""
    return frame[["sample_id", SCORE, REASONING]].reset_index(drop=True)


__all__ = ["export_review", "import_review"]
