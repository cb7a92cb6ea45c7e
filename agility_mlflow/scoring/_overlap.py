"""Metrics of word overlap with the reference: ``token_f1``, ``rouge_l``, ``bleu``."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.scoring._common import tokens
from agility_mlflow.scoring._metric import metric


@metric("token_f1")
def token_f1(output: str, references: Sequence[str], sample: Mapping[str, Any]) -> float | None:
    """SQuAD token F1: the harmonic mean of precision and recall of shared normalized words.

    Example:
        >>> token_f1("the revenue was 12 million", ["revenue 12 million"], {})
        0.857...
    """
    if not references:
        return None
    predicted = tokens(output)
    best = 0.0
    for ref in references:
        expected = tokens(ref)
        if not predicted or not expected:
            best = max(best, float(predicted == expected))
            continue
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@functools.lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@metric("rouge_l")
def rouge_l(output: str, references: Sequence[str], sample: Mapping[str, Any]) -> float | None:
    """ROUGE-L F-measure (longest common subsequence of stemmed words), best over references.

    Example:
        >>> round(rouge_l("net income rose", ["net income rose sharply"], {}), 3)
        0.857
    """
    if not references:
        return None
    return max(_rouge().score(ref, output)["rougeL"].fmeasure for ref in references)


@metric("bleu")
def bleu(output: str, references: Sequence[str], sample: Mapping[str, Any]) -> float | None:
    """Sentence BLEU from sacrebleu (with its default smoothing), scaled to 0-1.

    Short answers get low BLEU even when right: prefer it for summaries and longer text.

    Example:
        >>> bleu("the cat sat on the mat", ["the cat sat on the mat"], {})
        1.0
    """
    if not references:
        return None
    from sacrebleu.metrics.bleu import BLEU

    score = BLEU(effective_order=True).sentence_score(output, list(references)).score / 100
    return min(score, 1.0)  # sacrebleu can return 100.00000000000004 for identical text
