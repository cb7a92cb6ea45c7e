"""The statistics of a paired comparison: confidence intervals, McNemar's test, sample sizes.

Pure functions of numbers, no MLflow, so every value can be checked by hand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Resampled means are computed in blocks so memory stays bounded on large datasets; the random
# stream is drawn in the same order as one big call, so the block size never changes a result.
_BLOCK_ELEMENTS = 4_000_000


def paired_values(
    source: Mapping[str, float], candidate: Mapping[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The sample ids both runs have a value for (sorted), with the source's and the candidate's values.

    Example:
        >>> ids, s, c = paired_values({"q1": 1.0, "q2": 0.0, "q3": 1.0}, {"q3": 0.0, "q1": 1.0})
        >>> ids, s.tolist(), c.tolist()
        (['q1', 'q3'], [1.0, 1.0], [1.0, 0.0])
    """
    ids = sorted(set(source) & set(candidate))
    return ids, np.array([source[i] for i in ids], dtype=float), np.array([candidate[i] for i in ids], dtype=float)


def is_binary(*arrays: Iterable[float]) -> bool:
    """True when every value is 0 or 1 (a pass/fail metric such as ``exact_match``).

    Example:
        >>> is_binary([1.0, 0.0], [0, 1]), is_binary([1.0, 0.5])
        (True, False)
    """
    return all(float(v) in (0.0, 1.0) for values in arrays for v in values)


def paired_bootstrap_ci(
    differences: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean per-sample difference.

    Resamples sample indices with replacement (``numpy.random.default_rng(seed).integers``, one row
    of ``n`` indices per resample), takes each resample's mean, and returns the ``(1 - confidence) / 2``
    and ``(1 + confidence) / 2`` percentiles (numpy's linear interpolation). The same inputs and
    seed always give the same interval.

    Args:
        differences: Candidate minus source, one value per paired sample.
        confidence: Two-sided level; its lower bound is a one-sided test at ``(1 - confidence) / 2``.
        resamples: Number of bootstrap resamples.
        seed: Seed of the random generator.

    Example:
        >>> paired_bootstrap_ci([0.5, 0.5, 0.5])
        (0.5, 0.5)
        >>> low, high = paired_bootstrap_ci([0.0, 1.0, 0.0, 1.0, 1.0, 0.0], resamples=1000, seed=1)
        >>> low < 0.5 < high
        True
    """
    means = bootstrap_means(differences, resamples=resamples, seed=seed)
    alpha = 1.0 - confidence
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_means(differences: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """The means of ``resamples`` resamples (with replacement) of ``differences``; what the percentile interval reads.

    Example:
        >>> bootstrap_means([1.0, 1.0], resamples=3).tolist()
        [1.0, 1.0, 1.0]
    """
    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("no paired samples to resample")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    means = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    Example:
        >>> [round(x, 4) for x in wilson_interval(8, 10)]
        [0.4902, 0.9433]
    """
    if n == 0:
        return 0.0, 1.0
    z = _z(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_paired_ci(
    both: int, first_only: int, second_only: int, neither: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's square-and-add interval (his method 10) for the difference of paired proportions.

    The difference is ``p_first - p_second`` where ``p_first = (both + first_only) / n``. It combines
    the Wilson intervals of the two proportions with their estimated correlation (continuity
    corrected), and keeps a sensible width where a bootstrap cannot: with no discordant pair at
    all the bootstrap interval is ``[0, 0]``, this one is not.

    Args:
        both: Samples where both runs score 1.
        first_only: The first run (the candidate) scores 1, the second (the source) 0.
        second_only: The second run scores 1, the first 0.
        neither: Both score 0.
        confidence: Two-sided level.

    Example (Fagerland, Lydersen and Laake, *Statistical Analysis of Contingency Tables*, 2017, Cavo et al. data):
        >>> [round(x, 4) for x in newcombe_paired_ci(59, 6, 16, 80)]
        [-0.1186, -0.0046]
    """
    n = both + first_only + second_only + neither
    if n == 0:
        raise ValueError("no paired samples")
    p1 = (both + first_only) / n
    p2 = (both + second_only) / n
    l1, u1 = wilson_interval(both + first_only, n, confidence=confidence)
    l2, u2 = wilson_interval(both + second_only, n, confidence=confidence)
    margins = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    phi = 0.0
    if margins > 0:
        cross = both * neither - first_only * second_only
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    difference = p1 - p2
    low = difference - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    high = difference + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, low), min(1.0, high)


def mcnemar_exact_p(first_only: int, second_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against 1/2.

    Example:
        >>> mcnemar_exact_p(8, 2)  # 2 * (1 + 10 + 45) / 2**10
        0.109375
        >>> mcnemar_exact_p(0, 0)
        1.0
    """
    discordant = first_only + second_only
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(first_only, discordant, 0.5, alternative="two-sided").pvalue)


def non_inferior(low: float, high: float, margin: float, *, higher_is_better: bool = True) -> bool:
    """Whether the interval of candidate - source rules out a loss as large as ``margin``.

    Higher is better: the lower bound must lie strictly above ``-margin``. Lower is better: the
    upper bound strictly below ``+margin``. A bound exactly on the margin is not enough.

    Example:
        >>> non_inferior(-0.04, 0.02, 0.05), non_inferior(-0.05, 0.02, 0.05)
        (True, False)
        >>> non_inferior(-3.0, 4.0, 5.0, higher_is_better=False)
        True
    """
    return low > -margin if higher_is_better else high < margin


def required_samples(
    sd: float, margin: float, *, confidence: float = 0.95, power: float = 0.8, expected_difference: float = 0.0
) -> int | None:
    """Paired samples needed to show non-inferiority: ``((z_a + z_b) * sd / (margin + expected_difference))**2``.

    The standard formula for a paired non-inferiority test, with ``z_a`` the normal quantile of
    ``(1 + confidence) / 2`` (the one-sided level of the interval's bound), ``z_b`` that of ``power``,
    ``sd`` the standard deviation of the per-sample differences and ``expected_difference`` the true
    difference assumed (in the metric's better direction; negative: the candidate is a little worse).
    ``None`` when no sample size can show it (the expected loss reaches the margin).

    Example:
        >>> required_samples(0.2, 0.05)  # ((1.95996 + 0.84162) * 0.2 / 0.05) ** 2 = 125.6
        126
        >>> required_samples(0.2, 0.05, expected_difference=-0.05) is None
        True
    """
    gap = margin + expected_difference
    if gap <= 0:
        return None
    z = _z(1 - (1 - confidence) / 2) + _z(power)
    return int(math.ceil((z * sd / gap) ** 2 - 1e-9))


def newcombe_required_samples(
    both: int,
    first_only: int,
    second_only: int,
    neither: int,
    margin: float,
    *,
    confidence: float = 0.95,
    higher_is_better: bool = True,
    most: int = 1_000_000,
) -> int | None:
    """Paired samples at which the Newcombe interval would clear ``margin`` if the observed rates held.

    The counts are scaled to ``m`` samples and the smallest ``m`` whose interval is non-inferior is
    returned (``None`` when not even ``most`` would do). Unlike :func:`required_samples`, it stays
    meaningful when no pair disagrees: the per-sample differences then have no spread, yet the
    interval still has a width that only more samples shrink.

    Example:
        >>> newcombe_required_samples(10, 0, 0, 0, 0.05)  # all agree: -z**2 / (m + z**2) > -0.05 from m = 73
        73
        >>> newcombe_required_samples(5, 0, 5, 10, 0.05) is None  # the candidate loses 0.25: never non-inferior
        True
    """
    n = both + first_only + second_only + neither
    if n == 0:
        raise ValueError("no paired samples")

    def clears(m: int) -> bool:
        scale = m / n
        low, high = newcombe_paired_ci(both * scale, first_only * scale, second_only * scale, neither * scale, confidence=confidence)  # type: ignore[arg-type]
        return non_inferior(low, high, margin, higher_is_better=higher_is_better)

    if clears(n):
        return n
    if not clears(most):
        return None
    low, high = n, most  # clears(low) is False, clears(high) is True: the interval narrows as m grows
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if clears(middle) else (middle, high)
    return high


def sample_sd(values: Sequence[float]) -> float:
    """Sample standard deviation (``ddof=1``); 0 for fewer than two values.

    Example:
        >>> sample_sd([1.0, 3.0])
        1.4142135623730951
    """
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _z(quantile: float) -> float:
    # The standard library's normal quantile: importing scipy.stats for it cost seconds per compare.
    return statistics.NormalDist().inv_cdf(quantile)
