"""Judged metrics score the answers once every call has ended, handing each row over as soon as it is judged."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agility_mlflow.config import RunSettings
from agility_mlflow.errors import ProviderError
from agility_mlflow.evaluation import prepare, score_samples
from agility_mlflow.runner import Runner
from agility_mlflow.scoring import JudgedMetric, JudgedScore, JudgeInput
from tests.fake_backend import FakeBackend
from tests.helpers import write_project

CANDIDATE = {"name": "fake", "provider": "openai", "model_id": "fake-model", "base_url": "http://127.0.0.1:9/v1", "api_key": "unused"}


def _configuration(tmp_path: Path) -> Any:
    project = prepare(write_project(tmp_path, candidates=[CANDIDATE]), with_source=False)
    (configuration,) = project.configurations
    return configuration, project.dataset.rows


def test_answers_are_judged_after_the_last_call_and_each_row_is_handed_over_as_it_is_judged(tmp_path: Path) -> None:
    configuration, samples = _configuration(tmp_path)
    first_handed = threading.Event()
    calls_over: list[bool] = []
    waited: list[bool] = []

    def judge(item: JudgeInput, _judge: Any) -> JudgedScore:
        # Judge calls beside the candidate's would slow its measured latency: every call has ended.
        calls_over.append(len(backend.calls) == len(samples) and backend.active == 0)
        if item.question == samples[-1]["question"]:  # the last judgement waits for the first row handed over
            waited.append(first_handed.wait(10))
        return JudgedScore(1.0 if item.answer == "$1577.00 million" else 0.0, "read it")

    def on_row(index: int, _outcome: Any, row: dict[str, Any]) -> None:
        handed.append((index, row["judged"], threading.current_thread() is threading.main_thread()))
        first_handed.set()

    backend = FakeBackend("$1577.00 million")
    metric = JudgedMetric("judged", "llm_judge", judge, judge=object())  # type: ignore[arg-type]
    handed: list[tuple[int, Any, bool]] = []
    started = time.monotonic()
    _, rows = score_samples(configuration, backend, samples, [metric], Runner(RunSettings(concurrency=2, cache=False), progress=False),
                            None, on_row=on_row)
    assert calls_over == [True] * len(samples)
    assert waited == [True] and time.monotonic() - started < 5  # a row was handed over before the last judgement ended
    assert sorted(handed) == [(i, 1.0, True) for i in range(len(samples))]  # every complete row, once, on the caller's thread
    assert [row["judged_reasoning"] for row in rows] == ["read it"] * len(samples)


def test_a_judge_that_cannot_be_called_fails_the_run(tmp_path: Path) -> None:
    configuration, samples = _configuration(tmp_path)

    def judge(item: JudgeInput, _judge: Any) -> JudgedScore:
        raise ProviderError("judge: access denied")

    metric = JudgedMetric("judged", "llm_judge", judge, judge=object())  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="access denied"):
        score_samples(configuration, FakeBackend("x"), samples, [metric], Runner(RunSettings(concurrency=2, cache=False), progress=False), None)
