"""Non-LLM metrics and run aggregates on known pairs with exact expected values."""

from __future__ import annotations

import numpy as np
import pytest

from agility_mlflow.scoring import get_metric, mean_score, metric_names, numbers, run_metrics


def score(name: str, output: str, *references: str) -> float | None:
    return get_metric(name)(output, list(references), {})


def test_every_documented_metric_is_registered() -> None:
    assert set(metric_names()) >= {"exact_match", "token_f1", "rouge_l", "bleu", "numeric_match", "answer_length"}


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [("The answer is 42.", "answer is 42", 1.0), ("  YES ", "yes", 1.0), ("42", "It is 42", 0.0), ("a", "b", 0.0)],
)
def test_exact_match(output: str, reference: str, expected: float) -> None:
    assert score("exact_match", output, reference) == expected


def test_exact_match_takes_the_best_reference_and_needs_one() -> None:
    assert score("exact_match", "yes", "no", "Yes.") == 1.0
    assert score("exact_match", "yes") is None


def test_token_f1_by_hand() -> None:
    # output tokens: revenue was 12 million (4, "the" dropped); reference: revenue 12 million (3); common 3
    precision, recall = 3 / 4, 3 / 3
    assert score("token_f1", "the revenue was 12 million", "revenue 12 million") == pytest.approx(
        2 * precision * recall / (precision + recall)
    )
    assert score("token_f1", "nothing shared", "revenue") == 0.0
    assert score("token_f1", "", "") == 1.0


def test_rouge_l_by_hand() -> None:
    # LCS("net income rose", "net income rose sharply") = 3; P = 3/3, R = 3/4
    assert score("rouge_l", "net income rose", "net income rose sharply") == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_bleu_bounds() -> None:
    assert score("bleu", "the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert score("bleu", "alpha beta gamma delta", "one two three four") == 0.0


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("Revenue was $1,577 million.", "$1577.00", 1.0),
        ("about $1.577 billion", "$1,577 million", 1.0),
        ("1,600", "1577", 0.0),
        ("Capex was (12.5) million", "-12.5", 1.0),
        ("margin 38.2%", "38.2%", 1.0),
        ("38.5%", "38.2%", 1.0),  # within 1%
        ("39.0%", "38.2%", 0.0),
        ("up from 131.2 to 158.7", "Yes, from $131.2 million to $158.7 million", 1.0),
        ("to 158.7", "Yes, from $131.2 million to $158.7 million", 0.0),  # every reference number is needed
    ],
)
def test_numeric_match(output: str, reference: str, expected: float) -> None:
    assert score("numeric_match", output, reference) == expected


def test_numeric_match_without_a_number_is_not_applicable() -> None:
    assert score("numeric_match", "Yes", "Yes") is None


def test_number_parsing() -> None:
    assert [(n.value, n.scaled) for n in numbers("$3 billion and 1.2bn and 40k")] == [(3.0, 3e9), (1.2, 1.2e9), (40.0, 40e3)]


def test_answer_length_counts_words() -> None:
    assert score("answer_length", "Revenue was $1,577 million.") == 4.0


def test_run_metrics_exact_percentiles_and_errors() -> None:
    latencies = [0.5, 1.0, 1.5, 4.0]
    rows = [{"latency_s": v, "ttft_s": v / 10, "input_tokens": 100, "output_tokens": 10 * i, "cost_usd": 0.001 * i, "error": None}
            for i, v in enumerate(latencies, start=1)]
    rows.append({"latency_s": None, "ttft_s": None, "input_tokens": None, "output_tokens": None, "cost_usd": None, "error": "boom"})
    m = run_metrics(rows)
    assert m["n_samples"] == 5 and m["n_errors"] == 1
    assert m["latency_mean_s"] == pytest.approx(1.75)
    assert m["latency_p50_s"] == pytest.approx(1.25)
    assert m["latency_p95_s"] == pytest.approx(np.percentile(latencies, 95)) == pytest.approx(3.625)
    assert m["ttft_p50_s"] == pytest.approx(0.125)
    assert m["output_tokens_mean"] == 25 and m["input_tokens_mean"] == 100
    assert m["cost_usd_total"] == pytest.approx(0.01) and m["cost_usd_per_sample"] == pytest.approx(0.0025)


def test_partly_unknown_cost_is_not_reported() -> None:
    rows = [{"latency_s": 1.0, "cost_usd": 0.5, "error": None}, {"latency_s": 1.0, "cost_usd": None, "error": None}]
    assert "cost_usd_total" not in run_metrics(rows) and "cost_usd_per_sample" not in run_metrics(rows)


def test_mean_score_ignores_not_applicable() -> None:
    assert mean_score([1.0, None, 0.0, None]) == 0.5
    assert mean_score([None]) is None
