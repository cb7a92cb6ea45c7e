"""The vocabulary's one direction rule is the rule of every reader: compare, the sweep's objectives and review."""

from __future__ import annotations

import pytest

from agility_mlflow import review, vocabulary
from agility_mlflow.compare import metric_direction
from agility_mlflow.errors import InputError
from agility_mlflow.scoring import higher_is_better, metric_names, run_metrics
from agility_mlflow.sweep._objectives import direction


def test_compare_sweep_and_review_agree_on_every_direction() -> None:
    names = sorted({*vocabulary.LOWER_IS_BETTER_RUN_METRICS, *vocabulary.LOWER_IS_BETTER_COLUMNS, *metric_names()})
    for name in names:
        higher = higher_is_better(name)
        assert metric_direction(name) is higher, name
        assert direction(name) == ("maximize" if higher else "minimize"), name
        assert review._higher_is_better(name) is higher, name
    # A sample's own latency, tokens and cost: less is better wherever it is ranked.
    assert [higher_is_better(c) for c in ("latency_s", "ttft_s", "input_tokens", "output_tokens", "cost_usd")] == [False] * 5
    assert higher_is_better("token_f1") and not higher_is_better("answer_length")


def test_every_lower_is_better_run_metric_is_one_run_metrics_writes() -> None:
    row = {"latency_s": 1.0, "ttft_s": 0.5, "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.1, "error": None}
    written = run_metrics([row, {**row, "error": "x"}])
    assert vocabulary.LOWER_IS_BETTER_RUN_METRICS <= set(written)


def test_an_unknown_name_has_no_direction() -> None:
    with pytest.raises(InputError, match="unknown metric 'latency_typo'"):
        higher_is_better("latency_typo")
    with pytest.raises(InputError, match="sweep.objective: unknown metric 'latency_typo'"):
        direction("latency_typo")
