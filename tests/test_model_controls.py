"""Today's model controls: reasoning effort, thinking budget, top_k and any provider field, swept and sent as providers take them."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.backends.bedrock import converse_request
from agility_mlflow.config import load_config
from agility_mlflow.sweep import run_sweep
from tests.helpers import GOLDEN_ROWS, write_project
from tests.openai_server import start_standin

TRUTH = {row["question"]: row["answer_ground_truth"] for row in GOLDEN_ROWS}


def _by_effort(request: dict) -> str:
    """A reasoning model that gets the answer right only when it thinks hard enough."""
    question = next(q for q in TRUTH if q in request["messages"][-1]["content"])
    return TRUTH[question] if request.get("reasoning_effort") == "high" else "I am not sure."


def test_a_sweep_over_reasoning_effort_finds_the_effort_that_answers(tmp_path: Path) -> None:
    with start_standin(latency_s=0.0, answer=_by_effort) as server:
        candidate = {"name": "o-mini", "provider": "openai", "model_id": "o4-mini", "base_url": server.url, "stream": False}
        sweep = {"params": {"reasoning_effort": {"choices": ["low", "medium", "high"]}, "extra.top_k": {"choices": [5]}},
                 "sampler": "grid", "objective": "exact_match", "n_trials": 3}
        config = write_project(tmp_path, candidates=[candidate], sweep=sweep, run={"concurrency": 1, "traces": False})
        result = run_sweep(config, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)
        sent = sorted({(r["reasoning_effort"], r["top_k"]) for r in server.answered})
    assert sent == [("high", 5), ("low", 5), ("medium", 5)]  # each effort reached the model; top_k in the body
    client = MlflowClient()
    trials = client.search_runs([client.get_experiment_by_name("test-migration").experiment_id], filter_string="tags.`agility.role` = 'trial'")
    scores = {t.data.params["reasoning_effort"]: t.data.metrics["exact_match"] for t in trials}
    assert scores == {"low": 0.0, "medium": 0.0, "high": 1.0}
    assert result.best[0].params["reasoning_effort"] == "high"


def test_a_rejected_parameter_fails_the_configuration_once_with_the_provider_message(tmp_path: Path) -> None:
    message = "Unsupported value: 'temperature' does not support 0.5 with this model. Only the default (1) value is supported."
    reject = lambda request: message if request.get("temperature") != 1.0 else None  # noqa: E731
    with start_standin(latency_s=0.0, answer=_by_effort, reject=reject) as server:
        candidate = {"name": "o-mini", "provider": "openai", "model_id": "o4-mini", "base_url": server.url, "stream": False,
                     "params": {"reasoning_effort": "high"}}
        sweep = {"params": {"temperature": {"choices": [0.5, 1.0]}}, "sampler": "grid", "objective": "exact_match", "n_trials": 2}
        config = write_project(tmp_path, candidates=[candidate], sweep=sweep, run={"concurrency": 1, "traces": False})
        run_sweep(config, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)
        rejected = [r for r in server.answered if r["temperature"] == 0.5]
    assert len(rejected) == 1  # one call, not one per sample (3) and no retries
    client = MlflowClient()
    trials = client.search_runs([client.get_experiment_by_name("test-migration").experiment_id], filter_string="tags.`agility.role` = 'trial'")
    by_status = {t.info.status: t for t in trials}
    assert sorted(by_status) == ["FAILED", "FINISHED"]
    assert message in by_status["FAILED"].data.tags["agility.error"]
    finished = by_status["FINISHED"]
    assert finished.data.params["temperature"] == "1.0" and finished.data.metrics["exact_match"] == 1.0


def test_bedrock_controls_go_to_additional_model_request_fields() -> None:
    params = {"temperature": 1.0, "max_tokens": 2048, "top_k": 40, "thinking_budget": 1024, "extra": {"anthropic_beta": ["x"]}}
    request = converse_request("us.anthropic.claude-3-7-sonnet-20250219-v1:0", [{"role": "user", "content": "Q?"}], params)
    assert request["additionalModelRequestFields"] == {
        "top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 1024}, "anthropic_beta": ["x"]}


@pytest.mark.parametrize(("candidate", "sweep", "message"), [
    ({"provider": "bedrock", "params": {"reasoning_effort": "low"}}, None,
     "key 'candidates[0]': params.reasoning_effort is for openai models, not bedrock (put a provider field under params.extra)"),
    ({"provider": "openai", "params": {}}, {"params": {"thinking_budget": {"low": 1024, "high": 4096}}},
     "key 'sweep.params.thinking_budget': candidate 'c': params.thinking_budget is for bedrock models, not openai "
     "(put a provider field under params.extra)"),
    ({"provider": "openai", "params": {}}, {"params": {"logprobs": {"choices": [True]}}},
     "key 'sweep.params': cannot search 'logprobs' (searchable: max_tokens, reasoning_effort, seed, temperature, thinking_budget, "
     "top_k, top_p, extra.FIELD)"),
])
def test_a_control_the_provider_lacks_is_exit_2(tmp_path: Path, candidate: dict, sweep: dict | None, message: str) -> None:
    from agility_mlflow.errors import InputError

    config = write_project(tmp_path, candidates=[{"name": "c", "model_id": "m", **candidate}], **({"sweep": sweep} if sweep else {}))
    with pytest.raises(InputError) as info:
        load_config(config)
    assert str(info.value) == f"{config}: {message}"
