"""Human review round trip: export the samples worth reading, import an SME's scores back into MLflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mlflow import MlflowClient
from scipy.stats import spearmanr

from agility_mlflow.evaluation import run_project
from agility_mlflow.review import import_review
from tests.helpers import GOLDEN_ROWS, run_cli, write_project

REFERENCE = "revenue grew to 120 million in 2023"
# Outputs sharing 6, 5, ... 1 words with the reference: token_f1 falls from s1 to s6.
WORDS = REFERENCE.split()
ROWS = [{**GOLDEN_ROWS[0], "sample_id": f"s{i}", "answer_ground_truth": REFERENCE,
         "answer_source_llm": " ".join(WORDS[: 7 - i] + ["filler"] * i)} for i in range(1, 7)]


def _source_run(tmp_path: Path) -> str:
    config = write_project(tmp_path, rows=ROWS, metrics=["token_f1", "exact_match"])
    return next(s.run_id for s in run_project(config, progress=False) if s.role == "source")


def _fill(path: Path, scores: dict[str, str]) -> list[dict[str, str]]:
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        row["human_score"] = scores.get(row["sample_id"], "")
        row["human_reasoning"] = f"checked {row['sample_id']}" if row["human_score"] else ""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_export_picks_the_worst_and_a_random_slice_with_reasons(tmp_path: Path) -> None:
    run_id = _source_run(tmp_path)
    output = tmp_path / "review.csv"
    result = run_cli("review", "export", run_id, "--output", str(output), "--metric", "token_f1", "--worst", "2", "--sample", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"3 samples to review -> {output}"
    rows = list(csv.DictReader(output.open()))
    assert [(r["sample_id"], r["picked_because"]) for r in rows[:2]] == [("s6", "worst token_f1"), ("s5", "worst token_f1")]
    assert rows[2]["picked_because"] == "random" and rows[2]["sample_id"] in {"s1", "s2", "s3", "s4"}
    assert all(r["human_score"] == "" and r["output"] for r in rows)


def test_import_logs_scores_on_the_run_its_traces_and_the_agreement(tmp_path: Path) -> None:
    run_id = _source_run(tmp_path)
    output = tmp_path / "review.csv"
    assert run_cli("review", "export", run_id, "--output", str(output), "--metric", "token_f1", "--worst", "6", "--sample", "0").returncode == 0
    scores = {"s1": "5", "s2": "4", "s3": "4", "s4": "2", "s5": "3"}  # s6 left unreviewed
    _fill(output, scores)
    metrics = import_review(run_id, output, judge="token_f1")  # any score column can play the judge
    client = MlflowClient()
    run = client.get_run(run_id)
    table = json.loads(Path(client.download_artifacts(run_id, "eval_results.json", str(tmp_path))).read_text())
    f1 = {row[0]: row[table["columns"].index("token_f1")] for row in table["data"]}
    expected_rho = spearmanr([5, 4, 4, 2, 3], [f1[s] for s in ("s1", "s2", "s3", "s4", "s5")]).statistic
    assert run.data.metrics["human_score_mean"] == metrics["human_score_mean"] == 3.6
    assert run.data.metrics["n_human_scores"] == 5
    assert run.data.metrics["judge_human_spearman"] == expected_rho == metrics["judge_human_spearman"]
    assert run.info.status == "FINISHED"
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=run_id)
    human = {t.data.spans[0].attributes["agility.sample_id"]: a for t in traces for a in t.info.assessments
             if a.name == "human_score"}
    assert {k: a.feedback.value for k, a in human.items()} == {k: float(v) for k, v in scores.items()}
    assert human["s4"].rationale == "checked s4" and str(human["s4"].source.source_type) == "HUMAN"


def test_a_bad_score_names_the_row_and_column(tmp_path: Path) -> None:
    run_id = _source_run(tmp_path)
    output = tmp_path / "review.csv"
    assert run_cli("review", "export", run_id, "--output", str(output), "--metric", "token_f1", "--worst", "3", "--sample", "0").returncode == 0
    _fill(output, {"s6": "4", "s5": "good"})
    result = run_cli("review", "import", run_id, str(output))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: review.csv, row 3, column 'human_score': 'good' is not a number"
    assert "human_score_mean" not in MlflowClient().get_run(run_id).data.metrics


# Answers of 11, 2, 5 and 1 words: s1 is the longest (worst answer_length), s4 the shortest and the least right.
BY_LENGTH = [{**GOLDEN_ROWS[0], "sample_id": sample_id, "answer_ground_truth": REFERENCE, "answer_source_llm": answer}
             for sample_id, answer in [("s1", REFERENCE + " and more words here"), ("s2", "revenue grew"),
                                       ("s3", "revenue grew to 120 million"), ("s4", "nothing")]]


def _length_run(tmp_path: Path, tracking: str) -> str:
    config = write_project(tmp_path, rows=BY_LENGTH, metrics=["token_f1", "answer_length"], experiment=f"review-{tmp_path.name}")
    return next(s.run_id for s in run_project(config, tracking_uri=tracking, progress=False) if s.role == "source")


def test_worst_follows_each_metrics_direction(tmp_path: Path, tracking: str) -> None:
    run_id = _length_run(tmp_path, tracking)
    output = tmp_path / "review.csv"
    args = ["review", "export", run_id, "--output", str(output), "--sample", "0", "--tracking-uri", tracking]
    longest = run_cli(*args, "--metric", "answer_length", "--worst", "1")
    assert longest.returncode == 0, longest.stderr
    assert [(r["sample_id"], r["answer_length"]) for r in csv.DictReader(output.open())] == [("s1", "11.0")]  # lower is better
    lowest = run_cli(*args, "--metric", "token_f1", "--worst", "1")
    assert lowest.returncode == 0, lowest.stderr
    assert [r["sample_id"] for r in csv.DictReader(output.open())] == ["s4"]  # higher is better


def test_disagree_ranks_each_column_by_its_direction(tmp_path: Path, tracking: str) -> None:
    """s4 is the tersest answer (best answer_length) and the least right (worst token_f1): the widest disagreement."""
    run_id = _length_run(tmp_path, tracking)
    output = tmp_path / "review.csv"
    result = run_cli("review", "export", run_id, "--output", str(output), "--disagree", "token_f1,answer_length",
                     "--most-disagreeing", "1", "--sample", "0", "--tracking-uri", tracking)
    assert result.returncode == 0, result.stderr
    assert [(r["sample_id"], r["picked_because"]) for r in csv.DictReader(output.open())] == [("s4", "token_f1 and answer_length disagree")]
