"""The LLM-as-judge through a real OpenAI-compatible server that plays a judge with fixed JSON verdicts.

Exact values: the judge's scores, their mean, its calls, tokens and cost (counted apart from the
application's), its retries on malformed replies, its agreement with human scores, the reasoning
in the results table and as assessments on the sample traces, read back from a real MLflow server.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from agility_mlflow.pricing import cost_usd, lookup_price
from tests.helpers import GOLDEN_ROWS, run_cli, write_project
from tests.openai_server import start_standin

VERDICT = "Matches the reference figure."


def _answer(request: dict[str, Any]) -> str:
    """Candidates answer "Yes"; the judge gives 9 to an answer containing "Yes", else 6."""
    system = request["messages"][0]["content"]
    if "impartial judge" not in system:
        return "Yes"
    answer = re.search(r"<assistant_answer>\n(.*)\n</assistant_answer>", request["messages"][1]["content"], re.S).group(1)
    return json.dumps({"reasoning": VERDICT, "score": 9 if "Yes" in answer else 6})


def _judge(server_url: str, model_id: str = "gpt-4o") -> dict[str, Any]:
    return {"provider": "openai", "model_id": model_id, "base_url": server_url, "api_key_env": "AGILITY_TEST_NO_KEY"}


def _run(experiment: str, name: str) -> Any:
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return runs[0]


def _table(run_id: str, artifact: str = "eval_results.json") -> list[dict[str, Any]]:
    path = MlflowClient().download_artifacts(run_id, artifact, tempfile.mkdtemp())
    table = json.loads(Path(path).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def test_judge_scores_costs_calibration_and_assessments_are_exact(tmp_path: Path, mlflow_server: str) -> None:
    human = {"q1": 2, "q2": 1, "q3": 5}  # a 1-5 scale
    rows = [{**row, "human_score_source_llm": human[row["sample_id"]]} for row in GOLDEN_ROWS]
    with start_standin(latency_s=0.0, answer=_answer) as server:
        candidate = {"name": "mini", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": server.url, "api_key_env": "AGILITY_TEST_NO_KEY"}
        config = write_project(tmp_path, rows=rows, experiment="judged", candidates=[candidate],
                               metrics=["token_f1", "llm_judge"], judge=_judge(server.url), tracking_uri=mlflow_server)
        result = run_cli("run", str(config))
        judge_requests = [r for r in server.answered if "impartial judge" in r["messages"][0]["content"]]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: the judge gpt-4o is of the same model family ('gpt') as candidate 'mini'" in result.stderr
    mlflow.set_tracking_uri(mlflow_server)

    source, mini = _run("judged", "source"), _run("judged", "mini/qa")
    # Source answers: "$1,577 million" (6), "$210 million" (6), "Yes" (9); the candidate always says "Yes" (9).
    assert source.data.metrics["llm_judge"] == pytest.approx(7.0)
    assert mini.data.metrics["llm_judge"] == pytest.approx(9.0)
    assert (source.data.params["judge_provider"], source.data.params["judge_model_id"]) == ("openai", "gpt-4o")

    # The judge's usage is its own: 3 judgements per run, tokens as the server counted them, priced as gpt-4o.
    # The candidate's "Yes" to q3 is the source's answer word for word, so that verdict came from the cache.
    price = lookup_price("openai", "gpt-4o", {})
    usage = [(sum(len(m["content"]) // 4 for m in r["messages"]), len(_answer(r)) // 4) for r in judge_requests]
    assert len(judge_requests) == 5 and mini.data.metrics["judge_cache_hits"] == 1 and source.data.metrics["judge_cache_hits"] == 0
    for run in (source, mini):
        assert run.data.metrics["judge_calls"] == 3 and run.data.metrics["llm_judge_n_errors"] == 0
    source_usage, q3 = usage[:3], usage[2]
    for run, expected in ((source, source_usage), (mini, [*usage[3:], q3])):
        assert run.data.metrics["judge_input_tokens_total"] == sum(i for i, _ in expected)
        assert run.data.metrics["judge_output_tokens_total"] == sum(o for _, o in expected)
        assert run.data.metrics["judge_cost_usd_total"] == pytest.approx(sum(cost_usd(price, i, o) for i, o in expected), rel=1e-9)
    assert mini.data.metrics["cost_usd_total"] != pytest.approx(mini.data.metrics["judge_cost_usd_total"])  # the app's cost is apart

    # Calibration on the source answers: judge 6, 6, 9 against humans 2, 1, 5.
    # Spearman on ranks (1.5, 1.5, 3) and (2, 1, 3) is 1.5 / sqrt(1.5 * 2) = sqrt(3) / 2; graded in thirds the
    # judge says mid, mid, high and the humans low, low, high: agreement 1/3, chance 1/9, kappa 0.25.
    assert source.data.metrics["judge_human_spearman"] == pytest.approx(math.sqrt(3) / 2)
    assert source.data.metrics["judge_human_kappa"] == pytest.approx(0.25)
    assert source.data.metrics["judge_human_n"] == 3
    assert "judge_human_spearman" not in mini.data.metrics  # humans scored the source's answers only

    table = {row["sample_id"]: row for row in _table(source.info.run_id)}
    assert [table[s]["llm_judge"] for s in ("q1", "q2", "q3")] == [6, 6, 9]
    assert {row["llm_judge_reasoning"] for row in table.values()} == {VERDICT}
    assert all(row["llm_judge_error"] is None and row["judge_calls"] == 1 for row in table.values())

    traces = mlflow.search_traces(locations=[source.info.experiment_id], run_id=source.info.run_id, return_type="list")
    assert len(traces) == 3
    for trace in traces:
        (feedback,) = [a for a in trace.info.assessments if a.name == "llm_judge"]
        assert feedback.source.source_type == "LLM_JUDGE" and feedback.source.source_id == "openai:gpt-4o"
        assert feedback.rationale == VERDICT and feedback.value in (6, 9)


def test_malformed_verdicts_are_asked_again_then_recorded_as_the_sample_error(tmp_path: Path, mlflow_server: str) -> None:
    def answer(request: dict[str, Any]) -> str:
        prompt = request["messages"][1]["content"]
        retried = len(request["messages"]) > 2
        if "What was revenue" in prompt:
            return "I would give it a solid seven."  # never JSON
        if "What was net income" in prompt and not retried:
            return '{"reasoning": "close", "score": 11}'  # out of range once, then fine
        return json.dumps({"reasoning": "ok", "score": 8})

    with start_standin(latency_s=0.0, answer=answer) as server:
        config = write_project(tmp_path, experiment="malformed", metrics=["llm_judge"], judge={**_judge(server.url), "max_attempts": 3},
                               tracking_uri=mlflow_server)
        result = run_cli("run", str(config))
        retry_prompts = [r["messages"][-1]["content"] for r in server.answered if len(r["messages"]) > 2]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: llm_judge: 1 sample(s) not scored; first: judge openai:gpt-4o gave no usable reply in 3 attempts: not JSON" in result.stderr
    mlflow.set_tracking_uri(mlflow_server)
    run = _run("malformed", "source")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert (metrics["judge_calls"], metrics["judge_malformed_replies"], metrics["llm_judge_n_errors"]) == (6, 4, 1)
    assert metrics["llm_judge"] == 8.0  # the mean of the two scored samples; the failed one is left out, not 0
    table = {row["sample_id"]: row for row in _table(run.info.run_id)}
    assert table["q1"]["llm_judge"] is None and table["q1"]["llm_judge_error"].startswith("judge openai:gpt-4o gave no usable reply in 3 attempts")
    assert (table["q2"]["llm_judge"], table["q2"]["judge_malformed"]) == (8, 1)
    assert "That reply was not usable (score 11 is outside 1-10). Reply with only the JSON object." in retry_prompts


@pytest.mark.parametrize(
    ("metrics", "judge", "message"),
    [
        (["llm_judge"], None,
         "error: agility.yaml: metric 'llm_judge' needs a judge model: add a 'judge:' section (e.g. judge: {provider: local}, or an OpenAI or Bedrock model)"),
        (["geval_tone"], {"provider": "local"}, "error: agility.yaml: metric 'geval_tone': add its criteria under judge.geval.tone"),
        (["llm_judge"], {"provider": "replay"}, "error: agility.yaml: key 'judge.provider': a judge must call a model: use local, openai or bedrock"),
    ],
)
def test_a_judged_metric_without_its_judge_fails_before_any_call(tmp_path: Path, metrics: list[str], judge: Any, message: str) -> None:
    overrides = {"metrics": metrics} | ({"judge": judge} if judge else {})
    result = run_cli("run", str(write_project(tmp_path, **overrides)))
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and line.startswith("error: ") and line.endswith(message.removeprefix("error: ")), line


def test_a_bedrock_judge_is_configuration_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claude on Bedrock judges through boto3's Converse API (the Bedrock-protocol server here); its chatty reply is parsed."""
    from tests.bedrock_server import start_bedrock_server

    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGONLY0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-not-real")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    verdict = 'Here is my verdict:\n```json\n{"reasoning": "Right figure.", "score": 8}\n```'
    with start_bedrock_server(responder=lambda model_id, request: verdict) as server:
        judge = {"provider": "bedrock", "model_id": "us.anthropic.claude-3-5-haiku-20241022-v1:0"}
        config = write_project(tmp_path, experiment="bedrock-judge", metrics=["llm_judge"], judge=judge)
        result = run_cli("run", str(config), env={"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": server.url})
        judged = [r for r in server.requests if r.operation.startswith("converse")]
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(judged) == 3 and {r.model_id for r in judged} == {judge["model_id"]}
    assert "impartial judge" in judged[0].body["system"][0]["text"]
    run = _run("bedrock-judge", "source")
    assert run.data.metrics["llm_judge"] == 8.0 and run.data.metrics["judge_calls"] == 3
    assert run.data.metrics["judge_cost_usd_total"] > 0  # Claude 3.5 Haiku's price is known offline
