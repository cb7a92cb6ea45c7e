"""Judged metrics score each answer as it arrives, while the candidate's other calls still run."""

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


def test_each_answer_is_judged_while_the_other_calls_still_run(tmp_path: Path) -> None:
    configuration, samples = _configuration(tmp_path)
    judged_once = threading.Event()
    held: list[bool] = []

    def hold_the_last_call() -> None:
        if len(backend.calls) == len(samples):  # the last call waits for a judgement of an earlier answer
            held.append(judged_once.wait(10))

    def judge(item: JudgeInput, _judge: Any) -> JudgedScore:
        judged_once.set()
        return JudgedScore(1.0 if item.answer == "$1577.00 million" else 0.0, "read it")

    backend = FakeBackend("$1577.00 million", during_call=hold_the_last_call)
    metric = JudgedMetric("judged", "llm_judge", judge, judge=object())  # type: ignore[arg-type]
    handed: list[tuple[int, Any, bool]] = []
    started = time.monotonic()
    _, rows = score_samples(configuration, backend, samples, [metric], Runner(RunSettings(concurrency=2, cache=False), progress=False),
                            None, on_row=lambda i, _, row: handed.append((i, row["judged"], threading.current_thread() is threading.main_thread())))
    assert held == [True] and time.monotonic() - started < 5  # judged before the last answer arrived, not after all of them
    assert sorted(handed) == [(i, 1.0, True) for i in range(len(samples))]  # every complete row, once, on the caller's thread
    assert [row["judged_reasoning"] for row in rows] == ["read it"] * len(samples)


def test_a_judge_that_cannot_be_called_fails_the_run(tmp_path: Path) -> None:
    configuration, samples = _configuration(tmp_path)

    def judge(item: JudgeInput, _judge: Any) -> JudgedScore:
        raise ProviderError("judge: access denied")

    metric = JudgedMetric("judged", "llm_judge", judge, judge=object())  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="access denied"):
        score_samples(configuration, FakeBackend("x"), samples, [metric], Runner(RunSettings(concurrency=2, cache=False), progress=False), None)
