"""The statistics, checked against direct computations, published values and hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from agility_mlflow.compare import (
    _stats,
    mcnemar_exact_p,
    newcombe_paired_ci,
    newcombe_required_samples,
    non_inferior,
    paired_bootstrap_ci,
    paired_values,
    required_samples,
    wilson_interval,
)

DIFFERENCES = [0.12, -0.05, 0.0, 0.3, -0.2, 0.07, 0.01, -0.11, 0.25, 0.04, 0.0, -0.02, 0.15, 0.09, -0.3, 0.2, 0.05, 0.0, -0.07, 0.1, 0.33, -0.01, 0.06]


def test_bootstrap_of_two_values_has_the_known_percentiles() -> None:
    # Means of 2 draws from {0, 1}: 0, 0.5 and 1 with probabilities 1/4, 1/2, 1/4. The 2.5th and 97.5th
    # percentiles lie inside the outer masses, the 30th and 70th inside the middle one, whatever the draws.
    assert paired_bootstrap_ci([0.0, 1.0], confidence=0.95) == (0.0, 1.0)
    assert paired_bootstrap_ci([1.0, 0.0], confidence=0.4) == (0.5, 0.5)
    # Means of 3 draws from {0, 0, 1}: k/3 with P = 8/27, 12/27, 6/27, 1/27; the 95th percentile sits in 2/3
    # (cumulative 26/27 = 0.963), the 97.5th in 1.
    assert paired_bootstrap_ci([0.0, 0.0, 1.0], confidence=0.9) == (0.0, pytest.approx(2 / 3))
    assert paired_bootstrap_ci([0.0, 0.0, 1.0], confidence=0.95) == (0.0, 1.0)
    assert paired_bootstrap_ci([0.25] * 5) == (0.25, 0.25)  # no spread, no width


def test_bootstrap_interval_agrees_with_the_normal_interval_on_a_spread_sample() -> None:
    # For 23 roughly symmetric differences the percentile interval is close to mean -/+ z * sd / sqrt(n)
    # (sd with ddof=0, as the bootstrap's resampling distribution has): (-0.0148, 0.1026) here.
    mean, se = float(np.mean(DIFFERENCES)), float(np.std(DIFFERENCES)) / math.sqrt(len(DIFFERENCES))
    z = norm.ppf(0.975)
    low, high = paired_bootstrap_ci(DIFFERENCES, confidence=0.95)
    assert (low, high) == (pytest.approx(mean - z * se, abs=0.005), pytest.approx(mean + z * se, abs=0.005))
    narrower = paired_bootstrap_ci(DIFFERENCES, confidence=0.8)
    z80 = norm.ppf(0.9)
    assert narrower == (pytest.approx(mean - z80 * se, abs=0.005), pytest.approx(mean + z80 * se, abs=0.005))


def test_bootstrap_blocks_never_change_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = paired_bootstrap_ci(DIFFERENCES, seed=11)
    monkeypatch.setattr(_stats, "_BLOCK_ELEMENTS", 7 * len(DIFFERENCES))  # 7 resamples per block, 2000 not a multiple
    assert paired_bootstrap_ci(DIFFERENCES, seed=11) == whole


def test_bootstrap_is_reproducible_and_depends_on_the_seed() -> None:
    assert paired_bootstrap_ci(DIFFERENCES, seed=0) == paired_bootstrap_ci(DIFFERENCES, seed=0)
    assert paired_bootstrap_ci(DIFFERENCES, seed=0) != paired_bootstrap_ci(DIFFERENCES, seed=1)


def test_mcnemar_exact_p_for_8_against_2_discordant_pairs() -> None:
    # Two-sided exact binomial test of 2 successes in 10 at 1/2: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10.
    assert mcnemar_exact_p(8, 2) == 2 * (1 + 10 + 45) / 1024 == 0.109375
    assert mcnemar_exact_p(2, 8) == 0.109375
    assert mcnemar_exact_p(8, 2) == binomtest(8, 10, 0.5).pvalue
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(10, 0) == 2 / 1024


def test_newcombe_interval_matches_the_published_example() -> None:
    # Fagerland, Lydersen & Laake (2017), Cavo et al. (2012) data: estimate -0.0621, 95% CI -0.1186 to -0.0046.
    low, high = newcombe_paired_ci(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    # Swapping the two runs mirrors the interval.
    assert newcombe_paired_ci(59, 16, 6, 80) == pytest.approx((-high, -low), abs=1e-12)


def test_newcombe_interval_keeps_a_width_without_discordant_pairs() -> None:
    low, high = newcombe_paired_ci(20, 0, 0, 20)
    assert low < -0.04 and high > 0.04 and low == pytest.approx(-high)
    assert paired_bootstrap_ci([0.0] * 40) == (0.0, 0.0)  # why 0/1 metrics do not use the bootstrap


def test_newcombe_required_samples_is_the_first_size_whose_interval_clears_the_margin() -> None:
    # 20 pairs that all agree, half right: scaled to m samples, the bound clears -0.05 from m = 38 on.
    assert newcombe_paired_ci(18.5, 0, 0, 18.5)[0] < -0.05 < newcombe_paired_ci(19, 0, 0, 19)[0]  # m = 37, m = 38
    assert newcombe_required_samples(10, 0, 0, 10, 0.05) == 38
    assert newcombe_required_samples(20, 0, 0, 20, 0.05) == 40  # already enough: the samples at hand
    # The rates are kept while the counts grow: 1 loss in 20 agreeing pairs, scaled by m / 21.
    needed = newcombe_required_samples(10, 0, 1, 10, 0.1)
    scaled = lambda m: newcombe_paired_ci(10 * m / 21, 0, m / 21, 10 * m / 21)  # noqa: E731
    assert scaled(needed)[0] > -0.1 >= scaled(needed - 1)[0]
    assert newcombe_required_samples(5, 0, 5, 10, 0.05) is None  # a 0.25 loss never clears a 0.05 margin


def test_wilson_interval_by_hand() -> None:
    z = norm.ppf(0.975)
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(8, 10) == pytest.approx((centre - half, centre + half), abs=1e-15)


def test_non_inferiority_at_the_margin_boundary() -> None:
    assert non_inferior(-0.0499, 0.1, 0.05)
    assert not non_inferior(-0.05, 0.1, 0.05)  # a bound exactly on the margin is not enough
    assert not non_inferior(-0.0501, 0.1, 0.05)
    assert non_inferior(-9.0, 4.99, 5.0, higher_is_better=False)
    assert not non_inferior(-9.0, 5.0, 5.0, higher_is_better=False)


def test_required_samples_formula_by_hand() -> None:
    z = norm.ppf(0.975) + norm.ppf(0.8)  # 1.959964 + 0.841621
    assert required_samples(0.2, 0.05) == math.ceil((z * 0.2 / 0.05) ** 2) == 126
    assert required_samples(0.3, 0.05, expected_difference=-0.02) == math.ceil((z * 0.3 / 0.03) ** 2) == 785
    assert required_samples(0.2, 0.05, confidence=0.9, power=0.9) == math.ceil(((norm.ppf(0.95) + norm.ppf(0.9)) * 4) ** 2) == 138
    assert required_samples(0.0, 0.05) == 0
    assert required_samples(0.2, 0.05, expected_difference=-0.06) is None


def test_paired_values_keep_only_shared_sample_ids_in_sorted_order() -> None:
    ids, source, candidate = paired_values({"b": 2.0, "a": 1.0, "z": 9.0}, {"a": 0.5, "b": 2.5, "c": 3.0})
    assert ids == ["a", "b"]
    assert source.tolist() == [1.0, 2.0] and candidate.tolist() == [0.5, 2.5]
