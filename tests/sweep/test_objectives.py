"""Objectives, constraints and the search space, without running a study."""

from __future__ import annotations

import pytest

from agility_mlflow.config import SweepConfig
from agility_mlflow.errors import InputError
from agility_mlflow.sweep import parse_constraint, parse_objective
from agility_mlflow.sweep._space import grid, size


def test_single_metric_objective_takes_the_metric_direction() -> None:
    objective = parse_objective("token_f1", [])
    assert objective.directions == ("maximize",) and not objective.is_multi
    assert parse_objective(None, ["answer_length"]).directions == ("minimize",)


def test_multi_objective_directions() -> None:
    objective = parse_objective(["token_f1", "cost_usd_per_sample", "latency_p95_s"], [])
    assert objective.directions == ("maximize", "minimize", "minimize")
    assert objective.values({"token_f1": 0.5, "cost_usd_per_sample": 0.01, "latency_p95_s": 2.0}) == [0.5, 0.01, 2.0]


def test_weighted_objective_is_one_maximized_sum() -> None:
    objective = parse_objective({"token_f1": 1.0, "latency_p95_s": -0.1}, [])
    assert objective.directions == ("maximize",)
    assert objective.values({"token_f1": 0.6, "latency_p95_s": 2.0}) == [pytest.approx(0.4)]


def test_unknown_objective_metric() -> None:
    with pytest.raises(InputError, match="^sweep.objective: unknown metric 'f1'$"):
        parse_objective("f1", [])


def test_constraints_against_numbers_and_the_source() -> None:
    cap = parse_constraint("cost_usd_per_sample <= 0.001", 0)
    assert cap.violation({"cost_usd_per_sample": 0.0004}, None) == pytest.approx(-0.0006)
    assert cap.violation({}, None) == 1.0  # unknown cost never passes a cost cap
    floor = parse_constraint("token_f1 >= source - 0.02", 1)
    assert floor.uses_source
    assert floor.violation({"token_f1": 0.60}, {"token_f1": 0.60}) == pytest.approx(-0.02)
    assert floor.violation({"token_f1": 0.50}, {"token_f1": 0.60}) == pytest.approx(0.08)


@pytest.mark.parametrize("text", ["cost < 3", "token_f1 >= sauce", "latency_p95_s <= "])
def test_unreadable_constraint(text: str) -> None:
    with pytest.raises(InputError, match=r"^sweep.constraints\[2\]: cannot read"):
        parse_constraint(text, 2)


def test_grid_space_enumerates_stepped_ranges() -> None:
    sweep = SweepConfig(params={"temperature": {"low": 0.0, "high": 0.5, "step": 0.25}, "max_tokens": {"choices": [16, 32]}},
                        instructions=["", "Be brief."])
    space = grid(sweep, ["a", "b"], ["qa"])
    assert space["temperature"] == [0.0, 0.25, 0.5]
    assert size(space) == 2 * 1 * 2 * 3 * 2


def test_grid_needs_steps() -> None:
    with pytest.raises(InputError, match="^sweep.params.temperature: the grid sampler needs 'step' or 'choices'$"):
        grid(SweepConfig(params={"temperature": {"low": 0, "high": 1}}), ["a"], ["qa"])
