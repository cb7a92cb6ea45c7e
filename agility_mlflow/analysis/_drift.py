"""Drift, with no judge: how a candidate's answers differ in form from the source's on the same samples.

Each answer gets signals read from its text alone (length, truncation, emptiness, refusal, JSON and
Markdown shape, numbers and their units, language); a candidate's drift compares its signals with
the source's on the samples both answered. Nothing here calls a model.

Example:
    >>> s = answer_signals("I'm sorry, I cannot answer that.", finish_reason="stop")
    >>> s.refusal, s.words, s.has_number
    (True, 6, False)
    >>> unit_dropped("Revenue was 1,577.", "$1,577.0 million")
    True
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agility_mlflow.scoring import Number, numbers

# A refusal declines the task instead of answering it. Matched case-insensitively anywhere in the answer.
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bI(?:'m| am) (?:sorry|afraid|unable|not able)\b",
    r"\bI (?:can(?:no|')t|can not|could not|couldn't|won't|will not) (?:help|answer|assist|provide|determine|find|comply|say)\b",
    r"\bI do(?:n't| not) (?:have|know) (?:access|enough|the (?:information|data|answer))\b",
    r"\bas an (?:AI|artificial intelligence|language model)\b",
    r"\b(?:cannot|can't|unable to) be (?:determined|answered)\b",
    r"\bnot (?:enough|sufficient) (?:information|data|context)\b",
    r"\bthe (?:context|information|data)(?: provided| given)? (?:does not|doesn't) (?:contain|include|provide|mention|say)\b",
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_LIST_LINE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE)
_HEADER_LINE = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_WORD = re.compile(r"\w+(?:[.,'’]\w+)*", re.UNICODE)
# Function words that tell Latin-script languages apart; two hits and a clear lead decide.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and of to is was in that it for with as are were this be by on".split()),
    "fr": frozenset("le la les et des est un une du pour dans que qui pas sur au avec était".split()),
    "de": frozenset("der die das und ist nicht ein eine zu mit den von für auf im war".split()),
    "es": frozenset("el la los las y es un una que de del para con por fue en".split()),
    "it": frozenset("il lo la gli e è un una che di per con non sono era del".split()),
    "pt": frozenset("o a os as e é um uma que de do da para com não foi".split()),
    "nl": frozenset("de het een en is van dat niet met voor op was zijn".split()),
}
_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "CYRILLIC", "ARABIC", "HEBREW", "GREEK", "DEVANAGARI", "THAI")


@dataclass(frozen=True)
class AnswerSignals:
    """What one answer looks like, read from its text (and the call's ``finish_reason``).

    Attributes:
        words: Words in the answer.
        output_tokens: Tokens the model reported, when known.
        truncated: The model stopped at ``max_tokens`` (``finish_reason`` ``length``).
        empty: Nothing but whitespace.
        refusal: Matches one of :data:`REFUSAL_PATTERNS`.
        json_keys: The answer parses as JSON (bare or in a code fence): its top-level keys (empty for
            a list or scalar); ``None`` when it is not JSON.
        markdown_list: A Markdown list line (``- x``, ``1. x``).
        markdown_header: A Markdown header line (``# x``).
        has_number: At least one number.
        language: ``en``, ``fr``, ... or a script (``CYRILLIC``); ``None`` when too short to tell.
    """

    words: int
    output_tokens: int | None
    truncated: bool
    empty: bool
    refusal: bool
    json_keys: frozenset[str] | None
    markdown_list: bool
    markdown_header: bool
    has_number: bool
    language: str | None

    @property
    def is_json(self) -> bool:
        return self.json_keys is not None


def answer_signals(text: str | None, *, finish_reason: str | None = None, output_tokens: int | None = None) -> AnswerSignals:
    """The :class:`AnswerSignals` of one answer.

    Example:
        >>> s = answer_signals('```json\\n{"revenue": 1577, "unit": "USD m"}\\n```')
        >>> sorted(s.json_keys), s.has_number
        (['revenue', 'unit'], True)
        >>> answer_signals("Le chiffre d'affaires est de 1 577 millions et il est en hausse.").language
        'fr'
    """
    text = text or ""
    return AnswerSignals(
        words=len(_WORD.findall(text)),
        output_tokens=output_tokens,
        truncated=finish_reason == "length",
        empty=not text.strip(),
        refusal=bool(_REFUSAL.search(text)),
        json_keys=_json_keys(text),
        markdown_list=bool(_LIST_LINE.search(text)),
        markdown_header=bool(_HEADER_LINE.search(text)),
        has_number=bool(numbers(text)),
        language=detect_language(text),
    )


def _json_keys(text: str) -> frozenset[str] | None:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body or body[0] not in "{[":
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return frozenset(value) if isinstance(value, dict) else frozenset()


@functools.lru_cache(maxsize=4096)
def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return next((s for s in _SCRIPTS if name.startswith(s)), "LATIN")


def detect_language(text: str) -> str | None:
    """The answer's language from its script, or for Latin script from its function words; ``None`` if unclear.

    Example:
        >>> detect_language("The revenue was up and the margin is stable."), detect_language("$1,577 million")
        ('en', None)
        >>> detect_language("Выручка составила 1 577 миллионов долларов.")
        'CYRILLIC'
    """
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 8:
        return None
    scripts: dict[str, int] = {"LATIN": 0}
    if text.isascii():  # every letter Latin: the common case, without a name lookup per letter
        scripts["LATIN"] = len(letters)
    else:
        for char in letters:
            script = _script(char)
            scripts[script] = scripts.get(script, 0) + 1
    script, count = max(scripts.items(), key=lambda item: item[1])
    if script != "LATIN" and count >= 0.3 * len(letters):
        return script
    words = [w.lower() for w in _WORD.findall(text)]
    hits = sorted(((sum(w in stop for w in words), lang) for lang, stop in _STOPWORDS.items()), reverse=True)
    (best, lang), (second, _) = hits[0], hits[1]
    return lang if best >= 2 and best > second else None


def _has_unit(number: Number) -> bool:
    return bool(number.scale or number.currency or number.percent)


def _same_value(a: Number, b: Number) -> bool:
    return any(math.isclose(x, y, rel_tol=0.01, abs_tol=1e-9) for x in (a.value, a.scaled) for y in (b.value, b.scaled))


def unit_dropped(answer: str | None, reference: str | None) -> bool | None:
    """Whether the answer gives a reference figure without its unit or scale (``1,577`` for ``$1,577 million``).

    ``None`` when the reference has no number written with a currency, scale word or ``%``, or the
    answer does not give that figure at all (a missing or wrong number is another error).

    Example:
        >>> unit_dropped("Gross margin was 38.1%.", "38.1%"), unit_dropped("38.1", "38.1%"), unit_dropped("40%", "38.1%")
        (False, True, None)
    """
    found = numbers(answer or "")
    verdicts = []
    for wanted in (n for n in numbers(reference or "") if _has_unit(n)):
        same = [n for n in found if _same_value(n, wanted)]
        if same:
            verdicts.append(not any(_keeps_unit(n, wanted) for n in same))
    return any(verdicts) if verdicts else None


def _keeps_unit(answer: Number, reference: Number) -> bool:
    if reference.scale and not answer.scale and not math.isclose(answer.value, reference.scaled, rel_tol=0.01):
        return False  # "1,577" for "1,577 million" (but "1,577,000,000" keeps the scale in its digits)
    if reference.currency and not answer.currency:
        return False
    return not (reference.percent and not answer.percent)


@dataclass(frozen=True)
class SampleDrift:
    """One sample, candidate against source: the signals error categories are read from offline.

    Attributes:
        candidate, source: Each answer's signals.
        words_ratio: Candidate words over source words (``None`` when the source answer is empty).
        number_missing: The reference has a number and the candidate's answer none.
        unit_dropped: See :func:`unit_dropped` (``None``: not applicable).
        json_broken: The source answered in JSON and the candidate did not, or with other keys.
        markdown_lost: The source used a Markdown list or header that the candidate left out.
        markdown_added: The candidate added a Markdown list or header the source did not use.
        language_changed: Both languages are clear and differ.
    """

    candidate: AnswerSignals
    source: AnswerSignals
    words_ratio: float | None
    number_missing: bool | None
    unit_dropped: bool | None
    json_broken: bool | None
    markdown_lost: bool
    markdown_added: bool
    language_changed: bool | None


def row_signals(row: Mapping[str, Any]) -> AnswerSignals:
    """The signals of one ``eval_results.json`` row's answer."""
    tokens = row.get("output_tokens")
    return answer_signals(row.get("output"), finish_reason=row.get("finish_reason"),
                          output_tokens=int(tokens) if isinstance(tokens, (int, float)) and not math.isnan(tokens) else None)


def reference_text(row: Mapping[str, Any]) -> str:
    reference = row.get("reference")
    if isinstance(reference, (list, tuple)):
        return " / ".join(str(r) for r in reference)
    return "" if reference is None else str(reference)


def sample_drift(source_row: Mapping[str, Any], candidate_row: Mapping[str, Any]) -> SampleDrift:
    """How the candidate's answer to one sample drifts from the source's.

    Example:
        >>> d = sample_drift({"output": '{"value": 1577}', "reference": "$1,577 million"},
        ...                  {"output": "It was 1,577.", "reference": "$1,577 million"})
        >>> d.json_broken, d.unit_dropped, d.number_missing
        (True, True, False)
    """
    cand, src = row_signals(candidate_row), row_signals(source_row)
    reference = reference_text(candidate_row) or reference_text(source_row)
    reference_has_number = bool(numbers(reference))
    json_broken = None if not src.is_json else (not cand.is_json or cand.json_keys != src.json_keys)
    src_markdown = (src.markdown_list, src.markdown_header)
    cand_markdown = (cand.markdown_list, cand.markdown_header)
    language_changed = None if src.language is None or cand.language is None else src.language != cand.language
    return SampleDrift(
        candidate=cand,
        source=src,
        words_ratio=cand.words / src.words if src.words else None,
        number_missing=(not cand.has_number) if reference_has_number else None,
        unit_dropped=unit_dropped(candidate_row.get("output"), reference),
        json_broken=json_broken,
        markdown_lost=any(s and not c for s, c in zip(src_markdown, cand_markdown)),
        markdown_added=any(c and not s for s, c in zip(src_markdown, cand_markdown)),
        language_changed=language_changed,
    )


# The side-by-side profile: the same figures for the source and each candidate, on their paired samples.
PROFILE = ("words_mean", "output_tokens_mean", "truncated_rate", "empty_rate", "refusal_rate", "json_rate", "markdown_rate",
           "number_missing_rate", "unit_dropped_rate")
# Candidate against source only.
PAIRWISE = ("words_ratio", "output_tokens_ratio", "json_broken_rate", "markdown_lost_rate", "markdown_added_rate", "language_changed_rate")


@dataclass(frozen=True)
class Drift:
    """A candidate's drift from the source on the samples both answered without error.

    Attributes:
        n_paired: Samples both answered.
        source, candidate: The :data:`PROFILE` of each side on those samples (``None``: not applicable).
        pairwise: The :data:`PAIRWISE` figures (``None``: not applicable, e.g. no JSON source answers).
        samples: Sample id to its :class:`SampleDrift`.
    """

    n_paired: int
    source: Mapping[str, float | None]
    candidate: Mapping[str, float | None]
    pairwise: Mapping[str, float | None]
    samples: Mapping[str, SampleDrift]

    def metrics(self) -> dict[str, float]:
        """The candidate's ``drift.<name>`` metrics (not-applicable figures left out)."""
        values = {"n_paired": float(self.n_paired), **self.candidate, **self.pairwise}
        return {f"drift.{name}": float(value) for name, value in values.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"n_paired": self.n_paired, "source": dict(self.source), "candidate": dict(self.candidate), "pairwise": dict(self.pairwise)}


def drift(source_rows: Sequence[Mapping[str, Any]], candidate_rows: Sequence[Mapping[str, Any]]) -> Drift:
    """The candidate's :class:`Drift` from the source, paired by ``sample_id``; failed samples left out.

    Rates are over the paired samples they apply to: ``number_missing_rate`` over those whose
    reference has a number, ``unit_dropped_rate`` over those giving a reference figure that has a
    unit, ``json_broken_rate`` over those the source answered in JSON, ``language_changed_rate`` over
    those where both languages are clear.

    Example:
        >>> src = [{"sample_id": "a", "output": "Revenue was $1,577 million.", "reference": "$1,577 million", "error": None, "output_tokens": 8}]
        >>> cand = [{"sample_id": "a", "output": "1,577", "reference": "$1,577 million", "error": None, "output_tokens": 2}]
        >>> m = drift(src, cand).metrics()
        >>> m["drift.words_ratio"], m["drift.output_tokens_ratio"], m["drift.unit_dropped_rate"]
        (0.25, 0.25, 1.0)
    """
    answered = lambda rows: {str(r["sample_id"]): r for r in rows if r.get("error") is None and r.get("output") is not None}  # noqa: E731
    src, cand = answered(source_rows), answered(candidate_rows)
    ids = [sample_id for sample_id in cand if sample_id in src]
    samples = {sample_id: sample_drift(src[sample_id], cand[sample_id]) for sample_id in ids}
    pairs = list(samples.values())
    pairwise = {
        "words_ratio": _ratio([p.candidate.words for p in pairs], [p.source.words for p in pairs]),
        "output_tokens_ratio": _ratio(*_known_pairs([(p.candidate.output_tokens, p.source.output_tokens) for p in pairs])),
        "json_broken_rate": _rate([p.json_broken for p in pairs]),
        "markdown_lost_rate": _rate([p.markdown_lost for p in pairs]) if pairs else None,
        "markdown_added_rate": _rate([p.markdown_added for p in pairs]) if pairs else None,
        "language_changed_rate": _rate([p.language_changed for p in pairs]),
    }
    references = {sample_id: reference_text(cand[sample_id]) or reference_text(src[sample_id]) for sample_id in ids}
    return Drift(
        len(ids),
        _profile([src[i] for i in ids], [p.source for p in pairs], references, ids),
        _profile([cand[i] for i in ids], [p.candidate for p in pairs], references, ids),
        pairwise,
        samples,
    )


def _profile(rows: list[Mapping[str, Any]], signals: list[AnswerSignals], references: Mapping[str, str], ids: list[str]) -> dict[str, float | None]:
    tokens = [s.output_tokens for s in signals if s.output_tokens is not None]
    missing = [(not s.has_number) if numbers(references[i]) else None for s, i in zip(signals, ids)]
    dropped = [unit_dropped(row.get("output"), references[i]) for row, i in zip(rows, ids)]
    return {
        "words_mean": sum(s.words for s in signals) / len(signals) if signals else None,
        "output_tokens_mean": sum(tokens) / len(tokens) if tokens else None,
        "truncated_rate": _rate([s.truncated for s in signals]),
        "empty_rate": _rate([s.empty for s in signals]),
        "refusal_rate": _rate([s.refusal for s in signals]),
        "json_rate": _rate([s.is_json for s in signals]),
        "markdown_rate": _rate([s.markdown_list or s.markdown_header for s in signals]),
        "number_missing_rate": _rate(missing),
        "unit_dropped_rate": _rate(dropped),
    }


def _rate(flags: Sequence[bool | None]) -> float | None:
    known = [f for f in flags if f is not None]
    return sum(known) / len(known) if known else None


def _known_pairs(pairs: Sequence[tuple[int | None, int | None]]) -> tuple[list[int], list[int]]:
    known = [(a, b) for a, b in pairs if a is not None and b is not None]
    return [a for a, _ in known], [b for _, b in known]


def _ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    total = sum(denominators)
    return sum(numerators) / total if numerators and total else None
