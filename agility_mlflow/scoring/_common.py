"""String and number handling shared by the metrics."""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SCALES = {"thousand": 1e3, "k": 1e3, "million": 1e6, "mm": 1e6, "m": 1e6, "mn": 1e6, "billion": 1e9, "bn": 1e9, "b": 1e9, "trillion": 1e12, "tn": 1e12}
# A number with optional sign, $, thousands separators, decimals, accounting parentheses and a scale word.
_NUMBER = re.compile(
    r"(?P<open>\()?\s*(?P<sign>[-+−])?\s*(?P<currency>[$€£])?\s*(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)\s*(?P<close>\))?"
    r"\s*(?P<scale>thousand|million|billion|trillion|mm|mn|bn|tn|k|m|b)?\b",
    re.IGNORECASE,
)


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse spaces (SQuAD's normalization).

    Example:
        >>> normalize("  The Revenue was $1,577.0 million! ")
        'revenue was 15770 million'
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    return normalize(text).split()


@dataclass(frozen=True)
class Number:
    """A number read from text, and its value after a scale word (``million``) if there was one.

    ``scale``, ``currency`` and ``percent`` say how it was written (``$``, ``million``, ``%``), so
    error analysis can tell ``1,577`` from ``$1,577 million``.
    """

    value: float
    scaled: float
    scale: str = ""
    currency: str = ""
    percent: bool = False


def numbers(text: str) -> list[Number]:
    """Every number in ``text``.

    ``(12.5)`` is negative (accounting style); ``$1,577 million`` is 1577 scaled to 1.577e9;
    a percent sign is not a scale, so ``38.2%`` reads as 38.2.

    Example:
        >>> [(n.value, n.scaled) for n in numbers("Capex was (12.5) million, revenue $1.2bn, margin 38.2%")]
        [(-12.5, -12500000.0), (1.2, 1200000000.0), (38.2, 38.2)]
    """
    return list(_numbers(text))


@functools.lru_cache(maxsize=8192)
def _numbers(text: str) -> tuple[Number, ...]:
    # Analysis reads an answer's numbers several times (drift, units, profiles): parse each text once.
    found = []
    for match in _NUMBER.finditer(text):
        value = float(match["digits"].replace(",", ""))
        negative = match["sign"] in ("-", "−") or (match["open"] and match["close"])
        value = -value if negative else value
        word = (match["scale"] or "").lower()
        percent = text[match.end() :].lstrip().startswith("%")
        found.append(Number(value, value * _SCALES.get(word, 1.0), word, match["currency"] or "", percent))
    return tuple(found)
