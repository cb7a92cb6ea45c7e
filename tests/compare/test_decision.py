"""The decision rule on hand-made per-sample data: margins, insufficient samples, limits, the winner."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from agility_mlflow.compare import (
    RunRecord,
    Verdict,
    check_limits,
    compare_metric,
    decide,
    paired_bootstrap_ci,
    pick_winner,
    rank,
)
from agility_mlflow.config import DecisionConfig

Z = norm.ppf(0.975) + norm.ppf(0.8)


def _ids(n: int) -> list[str]:
    return [f"s{i:02d}" for i in range(n)]


def _scores(values: list[float]) -> dict[str, float]:
    return dict(zip(_ids(len(values)), values))


SOURCE_F1 = [0.4 + 0.015 * (i % 20) for i in range(40)]
# Candidate a little worse on average (-0.02) with spread, so the interval sits near a 0.05 margin.
CANDIDATE_F1 = [s + d for s, d in zip(SOURCE_F1, [-0.1, 0.06, -0.04, 0.0] * 10)]


def _bootstrap_low() -> tuple[float, float]:
    differences = np.array(CANDIDATE_F1) - np.array(SOURCE_F1)
    return paired_bootstrap_ci(differences, seed=0)


def test_pass_just_inside_the_margin_and_not_on_it() -> None:
    low, high = _bootstrap_low()
    assert -0.05 < low < -0.02 < high  # the interval straddles nothing but is close to the margin
    inside = compare_metric(_scores(SOURCE_F1), _scores(CANDIDATE_F1), "token_f1", decision=DecisionConfig(margin=-low + 1e-9))
    assert (inside.outcome, inside.ci_low, inside.ci_high, inside.n_paired) == ("pass", low, high, 40)
    on_margin = compare_metric(_scores(SOURCE_F1), _scores(CANDIDATE_F1), "token_f1", decision=DecisionConfig(margin=-low))
    assert on_margin.outcome != "pass"


def test_interval_crossing_the_margin_is_insufficient_with_the_samples_needed() -> None:
    differences = np.array(CANDIDATE_F1) - np.array(SOURCE_F1)
    mean, sd = float(differences.mean()), float(differences.std(ddof=1))
    low, high = _bootstrap_low()
    margin = -low - 0.001  # the lower bound falls just outside
    assert mean > -margin
    result = compare_metric(_scores(SOURCE_F1), _scores(CANDIDATE_F1), "token_f1", decision=DecisionConfig(margin=margin))
    needed = math.ceil((Z * sd / (margin + mean)) ** 2)  # the observed loss taken as the true one
    assert needed > 40
    assert (result.outcome, result.needed_samples, result.difference) == ("insufficient", needed, pytest.approx(mean, abs=1e-15))
    assert result.reason == f"token_f1 {mean:+.3f} [{low:.3f}, {high:.3f}] crosses margin {margin:g}: need ~{needed} paired samples (have 40)"


def test_estimate_beyond_the_margin_fails() -> None:
    worse = [s - 0.2 for s in SOURCE_F1]
    result = compare_metric(_scores(SOURCE_F1), _scores(worse), "token_f1", decision=DecisionConfig())
    assert result.outcome == "fail" and result.needed_samples is None
    assert result.reason.startswith("token_f1 -0.200 [-0.200, -0.200] outside margin 0.05")


def test_too_few_pairs_is_insufficient_with_the_number_needed() -> None:
    source = SOURCE_F1[:10]
    candidate = [s + (0.3 if i % 2 == 0 else -0.3) for i, s in enumerate(source)]  # mean 0, sd 0.3 * sqrt(10/9)
    result = compare_metric(_scores(source), _scores(candidate), "token_f1", decision=DecisionConfig())
    sd = 0.3 * math.sqrt(10 / 9)
    assert result.sd_difference == pytest.approx(sd)
    assert result.outcome == "insufficient"
    assert result.needed_samples == math.ceil((Z * sd / 0.05) ** 2) == 314
    assert "on only 10 paired samples (minimum 30): need ~314" in result.reason


def test_too_few_pairs_needs_at_least_min_samples() -> None:
    same = SOURCE_F1[:12]
    result = compare_metric(_scores(same), _scores(same), "token_f1", decision=DecisionConfig(min_samples=25))
    assert (result.outcome, result.needed_samples) == ("insufficient", 25)


def test_binary_metric_uses_mcnemar_and_newcombe() -> None:
    source = [1.0] * 20 + [0.0] * 20
    candidate = list(source)
    for i in (20, 21, 22, 23, 24):
        candidate[i] = 1.0
    candidate[0] = 0.0
    result = compare_metric(_scores(source), _scores(candidate), "exact_match", decision=DecisionConfig())
    assert result.method == "mcnemar"
    assert result.p_value == 2 * (1 + 6) / 64  # 1 loss against 5 wins
    from agility_mlflow.compare import newcombe_paired_ci

    assert (result.ci_low, result.ci_high) == newcombe_paired_ci(19, 5, 1, 15)
    assert result.difference == pytest.approx(0.1)
    bootstrap = compare_metric(_scores(source), _scores(candidate), "exact_match", decision=DecisionConfig(method="bootstrap"))
    assert bootstrap.method == "bootstrap" and bootstrap.p_value is None


def test_identical_pass_fail_answers_are_insufficient_not_failed() -> None:
    # No discordant pair: the differences have no spread (the power formula says 0 samples), but the
    # Newcombe interval of 30 pairs still crosses 0.05; at these rates it clears from 38 pairs on.
    same = [float(i % 2) for i in range(30)]
    result = compare_metric(_scores(same), _scores(same), "exact_match", decision=DecisionConfig())
    assert (result.method, result.sd_difference, result.difference) == ("mcnemar", 0.0, 0.0)
    assert result.ci_low < -0.05 and (result.outcome, result.needed_samples) == ("insufficient", 38)
    assert result.reason == f"exact_match +0.000 [{result.ci_low:.3f}, {result.ci_high:.3f}] crosses margin 0.05: need ~38 paired samples (have 30) (McNemar p=1)"
    forty = [float(i % 2) for i in range(40)]
    assert compare_metric(_scores(forty), _scores(forty), "exact_match", decision=DecisionConfig()).outcome == "pass"


def test_lower_is_better_metric_is_mirrored() -> None:
    source = [10.0 + i % 5 for i in range(40)]
    longer = [s + 3.0 for s in source]
    shorter = [s - 3.0 for s in source]
    decision = DecisionConfig(margins={"answer_length": 2.0})
    assert compare_metric(_scores(source), _scores(longer), "answer_length", decision=decision, higher_is_better=False).outcome == "fail"
    passed = compare_metric(_scores(source), _scores(shorter), "answer_length", decision=decision, higher_is_better=False)
    assert passed.outcome == "pass"
    assert passed.reason == "answer_length -3.000 [-3.000, -3.000] within margin 2 (lower is better)"


def _run(name: str, rows_f1: list[float] | None, **metrics: float) -> RunRecord:
    rows = None
    if rows_f1 is not None:
        rows = tuple({"sample_id": i, "error": None, "token_f1": v} for i, v in zip(_ids(len(rows_f1)), rows_f1))
    return RunRecord(name, name, "source" if name == "source" else "candidate", metrics=metrics, rows=rows)


def test_limits_cost_latency_errors_and_unknown_cost() -> None:
    source = _run("source", None, cost_usd_per_sample=0.002, latency_p95_s=1.0)
    candidate = _run("c", None, cost_usd_per_sample=0.0025, latency_p95_s=1.2, n_samples=40, n_errors=4)
    checks = check_limits(source, candidate, DecisionConfig(max_cost_ratio=1.0, max_latency_p95_ratio=1.5, max_error_rate=0.05))
    assert [(c.name, c.passed, c.text) for c in checks] == [
        ("cost", False, "cost +25% over limit x1 the source"),
        ("latency_p95", True, "p95 +0.20 s"),
        ("errors", False, "errors 10% over limit 5%"),
    ]
    unpriced = _run("u", None, latency_p95_s=0.5)
    checks = check_limits(source, unpriced, DecisionConfig(max_cost_per_sample_usd=0.01))
    assert (checks[0].passed, checks[0].text) == (False, "cost unknown, so its limit fails")
    assert check_limits(source, unpriced, DecisionConfig())[0].passed


def test_decide_combines_metrics_and_limits() -> None:
    source = _run("source", SOURCE_F1, cost_usd_per_sample=0.002, latency_p95_s=1.0)
    good = _run("good", [s + 0.01 for s in SOURCE_F1], cost_usd_per_sample=0.001, latency_p95_s=1.3, n_samples=40, n_errors=0)
    verdict = decide(source, good, metrics=["token_f1"], decision=DecisionConfig())
    assert verdict.outcome == "pass"
    assert verdict.reasons == ("token_f1 +0.010 [0.010, 0.010] within margin 0.05", "cost -50%", "p95 +0.30 s")
    slow = decide(source, good, metrics=["token_f1"], decision=DecisionConfig(max_latency_p95_s=1.2))
    assert slow.outcome == "fail" and slow.reasons[-1] == "p95 +0.30 s (1.30 s) over limit 1.2 s"
    few = _run("few", [s + 0.01 for s in SOURCE_F1[:10]], cost_usd_per_sample=0.001, latency_p95_s=0.9)
    insufficient = decide(source, few, metrics=["token_f1"], decision=DecisionConfig())
    assert (insufficient.outcome, insufficient.needed_samples) == ("insufficient", 30)
    unloaded = decide(source, RunRecord("x", "x", "candidate", metrics={"latency_p95_s": 5.0}), metrics=["token_f1"],
                      decision=DecisionConfig(max_latency_p95_s=2.0))
    assert unloaded.outcome == "fail" and unloaded.comparisons == ()
    assert unloaded.reasons[-1] == "quality not compared: a limit already fails"


def test_winner_by_tie_break_and_none_when_nothing_passes() -> None:
    def verdict(name: str, outcome: str, f1: float, cost: float | None, p95: float) -> Verdict:
        metrics = {"token_f1": f1, "latency_p95_s": p95, **({"cost_usd_per_sample": cost} if cost is not None else {})}
        return Verdict(RunRecord(name, name, "candidate", metrics=metrics), outcome, ())  # type: ignore[arg-type]

    verdicts = [
        verdict("a", "pass", 0.80, 0.002, 1.0),
        verdict("b", "pass", 0.80, 0.001, 2.0),
        verdict("c", "pass", 0.80, None, 0.5),
        verdict("d", "fail", 0.95, 0.0001, 0.1),
        verdict("e", "insufficient", 0.90, 0.0001, 0.1),
    ]
    order = ["quality", "cost_usd_per_sample", "latency_p95_s"]
    assert pick_winner(verdicts, tie_break=order, primary_metric="token_f1").run.name == "b"
    assert [v.run.name for v in rank(verdicts, tie_break=order, primary_metric="token_f1")] == ["b", "a", "c", "e", "d"]
    assert pick_winner(verdicts, tie_break=["latency_p95_s"], primary_metric="token_f1").run.name == "c"
    assert pick_winner(verdicts[3:], tie_break=order, primary_metric="token_f1") is None


def test_interval_wholly_beyond_the_margin_fails_whatever_the_number_of_pairs() -> None:
    # 12 pairs, fewer than min_samples 30: a loss the interval already shows is a fail, not "need ~N".
    source = SOURCE_F1[:12]
    worse = [s - 0.3 + (0.05 if i % 2 else -0.05) for i, s in enumerate(source)]
    result = compare_metric(_scores(source), _scores(worse), "token_f1", decision=DecisionConfig())
    assert result.n_paired == 12 and result.ci_high < -0.05
    assert (result.outcome, result.needed_samples) == ("fail", None)
    assert result.reason == f"token_f1 {result.difference:+.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}] outside margin 0.05"
    # Mirrored for a lower-is-better metric: a wholly longer answer length fails on 12 pairs too.
    longer = compare_metric(_scores([10.0] * 12), _scores([14.0] * 12), "answer_length",
                            decision=DecisionConfig(margins={"answer_length": 2.0}), higher_is_better=False)
    assert (longer.outcome, longer.needed_samples) == ("fail", None)
    # An interval that crosses the margin on too few pairs is still insufficient, with the need.
    crossing = compare_metric(_scores(source), _scores([s - 0.04 + (0.2 if i % 2 else -0.2) for i, s in enumerate(source)]),
                              "token_f1", decision=DecisionConfig())
    assert crossing.ci_low < -0.05 < crossing.ci_high
    assert crossing.outcome == "insufficient" and crossing.needed_samples > 30


def test_reported_only_metric_gets_numbers_but_no_verdict_label() -> None:
    from agility_mlflow.compare import Comparison, build_report

    def run(name: str, f1: list[float], em: list[float]) -> RunRecord:
        rows = tuple({"sample_id": i, "error": None, "token_f1": f, "exact_match": e} for i, f, e in zip(_ids(40), f1, em))
        return RunRecord(name, name, "source" if name == "source" else "candidate", metrics={"token_f1": sum(f1) / 40}, rows=rows)

    source = run("source", SOURCE_F1, [1.0] * 40)
    candidate = run("c", [s + 0.01 for s in SOURCE_F1], [0.0] * 40)  # exact_match collapses, but it only is reported
    verdict = decide(source, candidate, metrics=["token_f1", "exact_match"], primary=["token_f1"], decision=DecisionConfig())
    reported = verdict.comparison("exact_match")
    assert verdict.outcome == "pass"
    assert (reported.primary, reported.outcome, reported.needed_samples, reported.difference) == (False, None, None, -1.0)
    assert verdict.to_dict()["comparisons"][1]["outcome"] is None
    comparison = Comparison("e", source, [verdict], verdict, ["token_f1", "exact_match"], ["token_f1"], DecisionConfig())
    markdown = build_report(comparison).markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| c | +0.010"))
    assert row == f"| c | +0.010 [0.010, 0.010] n=40 pass | -1.000 [{reported.ci_low:.3f}, {reported.ci_high:.3f}] n=40 |"


def test_a_run_on_part_of_the_golden_set_is_held_to_the_source_cost_and_latency_on_the_same_samples() -> None:
    # The source answered 10 samples, slowly and dearly on the last 8; the candidate (a test split) the first 2.
    source_rows = tuple(
        {"sample_id": str(i), "exact_match": 1.0, "latency_s": 1.0 if i <= 2 else 9.0, "cost_usd": 0.001 if i <= 2 else 0.009,
         "error": None}
        for i in range(1, 11)
    )
    source = RunRecord("s", "source", "source", metrics={"n_samples": 10.0, "latency_p95_s": 9.0, "cost_usd_per_sample": 0.0074},
                       rows=source_rows)
    candidate_rows = tuple({**row, "latency_s": 2.0, "cost_usd": 0.002} for row in source_rows[:2])
    candidate = RunRecord("c", "c/qa@optimized", "candidate",
                          metrics={"n_samples": 2.0, "latency_p95_s": 2.0, "cost_usd_per_sample": 0.002}, rows=candidate_rows)
    verdict = decide(source, candidate, metrics=["exact_match"],
                     decision=DecisionConfig(max_latency_p95_ratio=1.5, max_cost_ratio=1.5))
    # Over all 10 source samples the candidate would look 73% cheaper and 7 s faster and pass both limits.
    assert {"cost +100% over limit x1.5 the source", "p95 +1.00 s over limit x1.5 the source"} <= set(verdict.reasons)
    assert verdict.outcome == "fail"
