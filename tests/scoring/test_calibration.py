"""The judge's agreement with human scores: Spearman's rho and Cohen's kappa on grades, checked by hand."""

from __future__ import annotations

import pytest

from agility_mlflow.scoring._calibration import agreement, grade, human_scale


def test_grades_are_thirds_of_each_scale_with_boundaries_going_up() -> None:
    assert [grade(v, (1.0, 10.0)) for v in (1, 3.99, 4, 6.99, 7, 10)] == [0, 0, 1, 1, 2, 2]
    assert [grade(v, (0.0, 1.0)) for v in (0.0, 0.33, 1 / 3, 0.66, 2 / 3, 1.0)] == [0, 0, 1, 1, 2, 2]
    assert grade(5, (5.0, 5.0)) == 1  # a scale of one value: the middle


def test_the_human_scale_is_the_smallest_usual_one_that_fits() -> None:
    assert human_scale([0.0, 0.5, 1.0]) == (0.0, 1.0)
    assert human_scale([1, 2, 5]) == (1.0, 5.0)
    assert human_scale([1, 6, 10]) == (1.0, 10.0)
    assert human_scale([0, 10]) == (0.0, 10.0)
    assert human_scale([20, 95]) == (0.0, 100.0)
    assert human_scale([-3, 250]) == (-3, 250)  # nothing usual holds them: their own range


def test_perfect_and_reversed_agreement_by_hand() -> None:
    judge = [1, 4, 7, 10]
    same = agreement(judge, [1, 3, 4, 5])  # 1-5 scale: grades 0, 1, 2, 2 against the judge's 0, 1, 2, 2
    assert same == {"judge_human_n": 4.0, "judge_human_spearman": pytest.approx(1.0), "judge_human_kappa": pytest.approx(1.0)}
    reversed_ = agreement(judge, [5, 4, 3, 1])
    assert reversed_["judge_human_spearman"] == pytest.approx(-1.0)
    # Grades 0, 1, 2, 2 against 2, 2, 1, 0: observed agreement 0, expected (1*1 + 1*1 + 2*2) / 16 = 0.375,
    # kappa = (0 - 0.375) / (1 - 0.375) = -0.6.
    assert reversed_["judge_human_kappa"] == pytest.approx(-0.6)


def test_missing_scores_are_left_out_and_too_little_is_only_counted() -> None:
    assert agreement([8, None, 2, 9, float("nan")], [5, 4, 1, None, 3]) == {"judge_human_n": 2.0}  # 2 pairs: no figures
    assert agreement([5, 5, 5], [1, 2, 3]) == {"judge_human_n": 3.0}  # the judge gives one score: nothing to correlate
    scored = agreement([2, None, 5, 9], [0.1, 0.9, 0.5, 0.8], judge_scale=None)
    assert scored["judge_human_n"] == 3.0 and scored["judge_human_spearman"] == pytest.approx(1.0)
