"""`agility analyze` end to end on a real MLflow server: a stand-in OpenAI-protocol server plays the candidate and the judge.

Six samples whose source answers are the references (token_f1 1.0) except s6, where the source is off.
The candidate drops the unit on s1, refuses s2, gives a wrong figure on s3, and matches the reference elsewhere.
The judge names categories by what it reads (scripted), so counts, columns, assessments and its cost are exact.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from agility_mlflow.analysis import categorize_offline, cluster_texts, failing_samples, taxonomy
from agility_mlflow.pricing import cost_usd, lookup_price
from agility_mlflow.review import export_review
from tests.helpers import run_cli, write_project
from tests.openai_server import start_standin

REFERENCES = {"s1": "$1,577 million", "s2": "38.1%", "s3": "$158.7 million", "s4": "$244.1 million", "s5": "$88.6 million", "s6": "$395 million"}
CANDIDATE = {"s1": "1,577", "s2": "I'm sorry, I cannot answer that.", "s3": "$999 million"}
SOURCE_OFF = {"s6": "About 400 dollars"}
REASONS = {"refusal": "It declines to answer.", "wrong_number": "The figure is not the reference's.", "missing_unit": "No unit or scale."}


def _golden() -> list[dict[str, str]]:
    return [{"sample_id": sid, "question": f"What is figure {sid}?", "answer_ground_truth": ref, "answer_source_llm": SOURCE_OFF.get(sid, ref),
             "output_token_source_llm": "3", "input_token_source_llm": "20", "latency_source_llm": "0.5"} for sid, ref in REFERENCES.items()]


def _answer(request: dict[str, Any]) -> str:
    system = request["messages"][0]["content"]
    user = request["messages"][-1]["content"]
    if "You analyze the errors" not in system:
        sample = re.search(r"figure (s\d)", user).group(1)
        return CANDIDATE.get(sample, REFERENCES[sample])
    answer = re.search(r"<candidate_answer[^>]*>\n(.*)\n</candidate_answer>", user, re.S).group(1)
    category = "refusal" if "sorry" in answer else "missing_unit" if answer == "1,577" else "wrong_number"
    return json.dumps({"category": category, "reason": REASONS[category]})


def _table(run_id: str, artifact: str) -> dict[str, dict[str, Any]]:
    path = MlflowClient().download_artifacts(run_id, artifact, tempfile.mkdtemp())
    table = json.loads(Path(path).read_text())
    return {row["sample_id"]: row for row in (dict(zip(table["columns"], values)) for values in table["data"])}


def test_judge_categories_counts_columns_cost_and_trace_assessments(tmp_path: Path, mlflow_server: str) -> None:
    with start_standin(latency_s=0.0, answer=_answer) as server:
        endpoint = {"base_url": server.url, "api_key_env": "AGILITY_TEST_NO_KEY"}
        config = write_project(
            tmp_path, rows=_golden(), experiment="analyze-judge", tracking_uri=mlflow_server, metrics=["token_f1", "numeric_match"],
            prompts=[{"name": "qa", "template": "Question: {{question}}"}],
            candidates=[{"name": "mini", "provider": "openai", "model_id": "gpt-4o-mini", **endpoint}],
            judge={"provider": "openai", "model_id": "gpt-4o", **endpoint}, decision={"primary": ["token_f1"]},
        )
        assert run_cli("run", str(config)).returncode == 0
        result = run_cli("analyze", str(config), "--output", str(tmp_path / "analysis"))
        judge_requests = [r for r in server.answered if "You analyze the errors" in r["messages"][0]["content"]]
    assert result.returncode == 0, result.stderr[-3000:]

    mlflow.set_tracking_uri(mlflow_server)
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("analyze-judge").experiment_id
    (run,) = client.search_runs([experiment_id], "attributes.run_name = 'mini/qa'")
    metrics = run.data.metrics

    # Three candidate losses (s1-s3), one source loss (s6): four judge calls, priced as gpt-4o from the tokens the server counted.
    assert len(judge_requests) == 4
    assert (metrics["analysis.n_failing"], metrics["analysis.source_n_failing"], metrics["analysis.judge_calls"]) == (3, 1, 4)
    assert {name: metrics[f"analysis.category.{name}"] for name in ("refusal", "wrong_number", "missing_unit", "incomplete", "other")} == {
        "refusal": 1, "wrong_number": 1, "missing_unit": 1, "incomplete": 0, "other": 0}
    price = lookup_price("openai", "gpt-4o", {})
    usage = [(sum(len(m["content"]) // 4 for m in r["messages"]), len(_answer(r)) // 4) for r in judge_requests]
    assert metrics["analysis.judge_input_tokens_total"] == sum(i for i, _ in usage)
    assert metrics["analysis.judge_cost_usd_total"] == pytest.approx(sum(cost_usd(price, i, o) for i, o in usage), rel=1e-9)
    # Drift with no judge: one refusal in six paired answers; the unit dropped on s1 of the four answers giving the reference figure (s1, s4-s6).
    assert metrics["drift.refusal_rate"] == pytest.approx(1 / 6) and metrics["drift.unit_dropped_rate"] == pytest.approx(1 / 4)

    table = _table(run.info.run_id, "analysis.json")
    assert {sid: (row["error_category"], row["error_reason"]) for sid, row in table.items()} == {
        "s1": ("missing_unit", REASONS["missing_unit"]), "s2": ("refusal", REASONS["refusal"]), "s3": ("wrong_number", REASONS["wrong_number"]),
        "s4": (None, None), "s5": (None, None), "s6": (None, None)}
    assert table["s6"]["source_error_category"] == "wrong_number" and table["s1"]["judge_calls"] == 1
    assert table["s1"]["analyzed_because"] == "token_f1 0.667 < source 1"

    traces = mlflow.search_traces(locations=[experiment_id], run_id=run.info.run_id, return_type="list")
    assessed = {}
    for trace in traces:
        for a in trace.info.assessments:
            if a.name == "error_category":
                assessed[trace.data.spans[0].attributes["agility.sample_id"]] = (a.value, a.rationale, a.source.source_id)
    assert assessed == {sid: (cat, REASONS[cat], "openai:gpt-4o") for sid, cat in (("s1", "missing_unit"), ("s2", "refusal"), ("s3", "wrong_number"))}

    assert "mini/qa" in result.stdout and "loses on 3 of 6 paired samples" in result.stdout
    assert re.search(r"refusal\s+1\s+0", result.stdout) and re.search(r"wrong_number\s+1\s+1", result.stdout)
    assert "missing_unit" in (tmp_path / "analysis" / "analysis.md").read_text()

    # Reviewers get the categories: one sample of each, with the judge's reason beside the answer.
    assert export_review(run.info.run_id, tmp_path / "review.csv", per_category=1, sample=0) == 3
    with (tmp_path / "review.csv").open() as handle:
        exported = {row["sample_id"]: row for row in csv.DictReader(handle)}
    assert {sid: (row["error_category"], row["error_reason"], row["picked_because"]) for sid, row in exported.items()} == {
        "s1": ("missing_unit", REASONS["missing_unit"], "error category missing_unit"),
        "s2": ("refusal", REASONS["refusal"], "error category refusal"),
        "s3": ("wrong_number", REASONS["wrong_number"], "error category wrong_number")}


def test_offline_categories_and_clusters_are_deterministic_with_a_seed() -> None:
    references = ["$1,577 million", "38.1%", "$158.7 million", "Working capital released cash", "Yes", "$88.6 million", "$395 million", "$61.3 million"]
    answers = ["1,577", "I'm sorry, I cannot answer that.", "$999 million", "Operating cash grew strongly thanks to working capital",
               "", '{"value": 88.6}', "Long-term debt stood at $395 million " + "and it matters " * 10, "Capital spending was modest"]
    source = [{"sample_id": f"s{i}", "output": ref if i != 5 else '{"value": 88.6, "unit": "USD m"}', "reference": ref, "error": None, "f1": 1.0}
              for i, ref in enumerate(references)]
    candidate = [{"sample_id": f"s{i}", "output": answer, "reference": ref, "error": None, "f1": 0.2,
                  "finish_reason": "length" if i == 6 else "stop", "output_tokens": 40 if i == 6 else 5}
                 for i, (answer, ref) in enumerate(zip(answers, references))]
    failures = failing_samples(source, candidate, "f1")
    by_id = lambda rows: {r["sample_id"]: r for r in rows}  # noqa: E731
    first = categorize_offline(failures, by_id(source), by_id(candidate), taxonomy(None), seed=7)
    again = categorize_offline(failures, by_id(source), by_id(candidate), taxonomy(None), seed=7)
    assert [c.columns() for c in first] == [c.columns() for c in again]
    assert [c.category for c in first] == ["missing_unit", "refusal", "wrong_number", "other", "incomplete", "format", "incomplete", "wrong_number"]
    assert first[7].reason == "gives no figure; the reference says $61.3 million"
    assert first[3].reason.startswith("no drift signal explains it; like the other failing answers about: ")
    assert first[3].cluster is not None and first[6].reason == "cut off at the token limit (40 tokens)"

    texts = [f"{a} {r}" for a, r in zip(answers, references)] * 2
    labels, names = cluster_texts(texts, 3, seed=7)
    assert (labels, names) == cluster_texts(texts, 3, seed=7)
    assert len(set(labels)) == 3 and labels[:8] == labels[8:]  # the same text lands in the same cluster
