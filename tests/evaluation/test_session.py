"""The evaluation session: one owner of backends, runner, judge and experiment, closed together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from agility_mlflow import tracking as tracking_module
from agility_mlflow.evaluation import EvaluationSession, prepare
from tests.fake_backend import FakeBackend
from tests.helpers import write_project

CANDIDATE = {"name": "fake", "provider": "openai", "model_id": "fake-model", "base_url": "http://127.0.0.1:9/v1", "api_key": "unused"}


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[FakeBackend]:
    """Every backend the session builds is a fake answering the ground truth of q1; the list keeps them."""
    backends: list[FakeBackend] = []

    def create(model: Any, run: Any, recorded: Any = None) -> FakeBackend:
        backends.append(FakeBackend("$1577.00 million", model_id=model.model_id))
        return backends[-1]

    monkeypatch.setattr("agility_mlflow.evaluation._session.create_backend", create)
    return backends


def test_one_call_evaluates_into_a_logged_run_and_leaving_closes_every_backend(
    tracking: str, tmp_path: Path, built: list[FakeBackend]
) -> None:
    project = prepare(write_project(tmp_path, candidates=[CANDIDATE], experiment="session"), with_source=False)
    (configuration,) = project.configurations
    adopted = FakeBackend("unused")
    with EvaluationSession(project, progress=False, open_backends=True) as session:
        assert len(built) == 1 and session.backend(configuration) is built[0]  # built once, on entering
        session.adopt(adopted)
        session.open_experiment()
        prompt_uri = tracking_module.register_prompt(configuration.template)
        summary = session.evaluate_into_run(configuration, prompt_uri, tags={"agility.extra": "yes"})
        assert not built[0].closed
    assert built[0].closed and adopted.closed
    assert len(built[0].calls) == 3
    run = MlflowClient().get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == session.experiment_id
    assert run.data.tags["agility.role"] == "candidate" and run.data.tags["agility.extra"] == "yes"
    assert run.data.metrics["n_samples"] == 3.0
    assert run.data.metrics["exact_match"] == pytest.approx(1 / 3)  # only q1's reference is the fake's answer


def test_a_failure_inside_the_session_still_closes_its_backends(tmp_path: Path, built: list[FakeBackend]) -> None:
    project = prepare(write_project(tmp_path, candidates=[CANDIDATE]), with_source=False)
    with pytest.raises(RuntimeError, match="boom"), EvaluationSession(project, progress=False, open_backends=True):
        raise RuntimeError("boom")
    assert [b.closed for b in built] == [True]


def test_backends_are_built_lazily_unless_asked_up_front(tmp_path: Path, built: list[FakeBackend]) -> None:
    project = prepare(write_project(tmp_path, candidates=[CANDIDATE]), with_source=False)
    with EvaluationSession(project, progress=False) as session:
        assert built == []
        session.backend(project.configurations[0])
        session.backend(project.configurations[0])
        assert len(built) == 1
    assert built[0].closed
