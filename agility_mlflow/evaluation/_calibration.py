"""How far the judge agrees with the humans who scored the source answers."""

from __future__ import annotations

from agility_mlflow.evaluation._entities import HUMAN_SCORE, EvaluationResult, Project


def calibrate(project: Project, result: EvaluationResult) -> dict[str, float]:
    """The judge's agreement with ``human_score_source_llm`` on the source answers (empty without either).

    Only the source run answers with the answers the humans scored, so only it is calibrated.
    """
    from agility_mlflow.scoring import agreement

    if HUMAN_SCORE not in project.dataset.columns or "llm_judge" not in {m.name for m in project.judged_metrics}:
        return {}
    human = {str(row["sample_id"]): row.get(HUMAN_SCORE) for row in project.dataset.rows}
    judged = [(row["llm_judge"], human.get(str(row["sample_id"]))) for row in result.rows]
    return agreement([j for j, _ in judged], [h for _, h in judged])
