"""A judge reply that copies the metric's own example instead of judging is malformed, never a score.

DeepEval's GEval prompt ends with an example reply (``"your concise and informative reason here"`` with
the lowest score); a small judge sometimes returns it as is. Scored against a real MLflow server with
the real DeepEval and an OpenAI-protocol stand-in judge that does exactly that.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from agility_mlflow.evaluation import run_project
from tests.helpers import write_project
from tests.openai_server import start_standin

EXAMPLE = '{"reason": "your concise and informative reason here", "score": 0}'


def _echoing_judge(request: dict[str, Any]) -> str:
    prompt = str(request["messages"][0]["content"])
    if "your concise and informative reason here" in prompt:
        return EXAMPLE  # the example reply, copied
    return json.dumps({"steps": ["Check that the answer states the figure asked for."]})


@pytest.fixture
def judge_url() -> Iterator[str]:
    with start_standin(latency_s=0.0, answer=_echoing_judge) as server:
        yield server.url


def test_an_echoed_example_is_an_error_not_a_zero(tracking: str, judge_url: str, tmp_path: Path) -> None:
    judge = {"provider": "openai", "model_id": "standin-judge", "base_url": judge_url, "max_attempts": 2,
             "geval": {"concise": "The answer gives the figure and nothing else."}}
    config = write_project(tmp_path, metrics=["geval_concise"], judge=judge, pricing={"standin-judge": {"input": 1.0, "output": 1.0}})
    (source,) = run_project(config, tracking_uri=tracking, progress=False)
    run = MlflowClient(tracking).get_run(source.run_id)
    assert "geval_concise" not in run.data.metrics  # no 0.0 mean made of copied examples
    assert run.data.metrics["geval_concise_n_errors"] == 3
    assert run.data.metrics["judge_malformed_replies"] == 3 * 2  # each sample asked again, then given up
    table = json.loads(Path(MlflowClient(tracking).download_artifacts(source.run_id, "eval_results.json", str(tmp_path))).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert {row["geval_concise"] for row in rows} == {None}
    assert {row["geval_concise_error"] for row in rows} == {(
        "judge openai:standin-judge gave no usable reply in 2 attempts: "
        "it repeats the instructions' example text 'your concise and informative reason here' instead of judging"
    )}


def test_quoting_the_sample_or_the_users_criteria_is_not_an_echo() -> None:
    from agility_mlflow.scoring._judge_model import echoed_prompt_text

    prompt = ('Criteria: The answer gives the figure and nothing else.\nAnswer: Revenue was $1,577 million in FY2023.\n'
              'Example JSON: {"reason": "your concise and informative reason here", "score": 0}')
    own = ["Revenue was $1,577 million in FY2023.", "The answer gives the figure and nothing else."]
    assert echoed_prompt_text({"statements": ["Revenue was $1,577 million in FY2023."]}, prompt, own) is None
    assert echoed_prompt_text({"steps": ["The answer gives the figure and nothing else."]}, prompt, own) is None
    assert echoed_prompt_text({"reason": "It states $1,577 million, the figure asked for.", "score": 9}, prompt, own) is None
    assert echoed_prompt_text({"reason": "Your concise and informative reason here.", "score": 0}, prompt, own) == (
        "your concise and informative reason here")
