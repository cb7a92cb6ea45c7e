"""Drift metrics, exact on crafted answers: JSON against prose, cut-off answers, refusals, dropped units, language."""

from __future__ import annotations

import json

import pytest

from agility_mlflow.analysis import answer_signals, detect_language, drift, unit_dropped


def _row(sample_id: str, output: str | None, reference: str, *, tokens: int | None = None, finish: str = "stop", error: str | None = None) -> dict:
    return {"sample_id": sample_id, "output": output, "reference": reference, "output_tokens": tokens, "finish_reason": finish, "error": error}


SOURCE = [
    _row("j1", json.dumps({"revenue": 1577.0, "unit": "USD million"}), "$1,577.0 million", tokens=12),
    _row("j2", json.dumps({"revenue": 1412.6, "unit": "USD million"}), "$1,412.6 million", tokens=12),
    _row("p1", "Gross margin was 38.1% in FY2023.", "38.1%", tokens=10),
    _row("p2", "Net income was $158.7 million.", "$158.7 million", tokens=8),
    _row("p3", "The company has the cash.", "Yes", tokens=6),
    _row("e1", None, "$1", error="timeout"),
]
CANDIDATE = [
    _row("j1", "Revenue was 1,577 in FY2023.", "$1,577.0 million", tokens=9),  # prose for JSON; unit and scale dropped
    _row("j2", json.dumps({"revenue": 1412.6}), "$1,412.6 million", tokens=6),  # JSON, but a key lost
    _row("p1", "I'm sorry, I cannot answer that from the context given to me today.", "38.1%", tokens=20),  # refusal, no number
    _row("p2", "Net income was $158.7 million, up from the prior year because of strong demand across every", "$158.7 million",
         tokens=32, finish="length"),  # cut off, keeps its unit
    _row("p3", "", "Yes", tokens=0),  # empty
    _row("e1", "$1", "$1", tokens=1),  # the source failed here: not paired
]


def test_drift_metrics_are_exact_on_crafted_answers() -> None:
    result = drift(SOURCE, CANDIDATE)
    m = result.metrics()
    assert result.n_paired == 5 and m["drift.n_paired"] == 5.0
    # Words ("1577.0", "$158.7" and "I'm" are one word each): source 5 + 5 + 6 + 5 + 5 = 26; candidate 5 + 2 + 13 + 16 + 0 = 36.
    assert [p.source.words for p in result.samples.values()] == [5, 5, 6, 5, 5]
    assert [p.candidate.words for p in result.samples.values()] == [5, 2, 13, 16, 0]
    assert m["drift.words_ratio"] == pytest.approx(36 / 26) and m["drift.words_mean"] == pytest.approx(36 / 5)
    assert m["drift.output_tokens_ratio"] == pytest.approx((9 + 6 + 20 + 32 + 0) / (12 + 12 + 10 + 8 + 6))
    assert m["drift.output_tokens_mean"] == pytest.approx(67 / 5)
    assert (m["drift.truncated_rate"], m["drift.empty_rate"], m["drift.refusal_rate"]) == (0.2, 0.2, 0.2)
    # JSON: two source answers are JSON; the candidate answered j1 in prose and j2 with other keys.
    assert m["drift.json_broken_rate"] == 1.0 and m["drift.json_rate"] == pytest.approx(1 / 5)
    assert result.source["json_rate"] == pytest.approx(2 / 5)
    # Four references have a number ("Yes" has none); of those answers only the refusal (p1) gives none.
    assert m["drift.number_missing_rate"] == 0.25 and result.source["number_missing_rate"] == 0.0
    # Reference figures with a unit that the answer gives: j1 (dropped both), j2 (JSON 1412.6 without $ or million), p2 (kept).
    assert m["drift.unit_dropped_rate"] == pytest.approx(2 / 3)
    # The source's JSON figures carry no unit either (j1, j2); its prose keeps them (p1, p2).
    assert result.source["unit_dropped_rate"] == 0.5
    assert "drift.language_changed_rate" in m and m["drift.language_changed_rate"] == 0.0
    assert m["drift.markdown_lost_rate"] == 0.0 and m["drift.markdown_added_rate"] == 0.0


def test_a_source_without_json_answers_has_no_json_drift_metric() -> None:
    m = drift([_row("a", "Revenue was $1,577 million.", "$1,577 million")], [_row("a", "1,577", "$1,577 million")]).metrics()
    assert "drift.json_broken_rate" not in m
    assert m["drift.unit_dropped_rate"] == 1.0 and m["drift.words_ratio"] == 0.25


@pytest.mark.parametrize(
    ("answer", "reference", "dropped"),
    [
        ("1,577", "$1,577 million", True),
        ("$1,577", "$1,577 million", True),  # scale dropped
        ("1,577 million", "$1,577 million", True),  # currency dropped
        ("$1,577 million", "$1,577 million", False),
        ("$1.577 billion", "$1,577 million", False),  # another scale word, the same figure
        ("1,577,000,000 dollars", "$1,577 million", True),  # the scale is in the digits, the $ is gone
        ("38.1", "38.1%", True),
        ("38.1 %", "38.1%", False),
        ("1,600", "$1,577 million", None),  # another figure: a wrong number, not a dropped unit
        ("1577", "1577", None),  # no unit to drop
    ],
)
def test_unit_dropped(answer: str, reference: str, dropped: bool | None) -> None:
    assert unit_dropped(answer, reference) is dropped


def test_answer_signals_read_format_refusal_and_language() -> None:
    fenced = answer_signals('```json\n{"a": 1, "b": [2]}\n```')
    assert fenced.json_keys == frozenset({"a", "b"})
    assert answer_signals('{"a": 1').json_keys is None  # broken JSON is prose
    assert answer_signals("## Revenue\n- FY2023: $1,577 million").markdown_header
    assert answer_signals("1. first\n2. second").markdown_list
    assert answer_signals("As an AI language model, I do not have access to those figures.").refusal
    assert not answer_signals("The context shows revenue of $1,577 million.").refusal
    assert answer_signals("x", finish_reason="length").truncated
    assert detect_language("Der Umsatz ist nicht gestiegen und die Marge war stabil.") == "de"
    assert detect_language("売上高は15億7700万ドルでした。") == "CJK"
    assert detect_language("1,577") is None
