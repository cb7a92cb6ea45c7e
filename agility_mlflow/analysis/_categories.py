"""Error categories: what went wrong on each sample a candidate loses.

A sample is analyzed when the candidate scores below the source on the analysis metric (paired by
sample id) or below ``analysis.threshold``; the source's samples where it loses to the candidate
(or falls below the threshold) are categorized the same way, so the counts compare side by side.

- With a ``judge:``, the judge names each sample's category and reason, through the runner (cache,
  retries) with its calls, tokens and cost counted.
- Offline, the drift signals decide the categories they can see (refusal, cut off, format, missing
  unit, missing or wrong figure, verbosity, language), and a TF-IDF + k-means clustering of the
  failing answers with their references groups every sample, labelled by its top terms; what no
  signal explains is ``other``, described by its cluster. The same runs and seed give the same result.

Example:
    >>> labels, terms = cluster_texts(["revenue 1577 million", "revenue 1412 million", "margin 38 percent", "margin 40 percent"], 2, seed=0)
    >>> labels[0] == labels[1] != labels[2] == labels[3]
    True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agility_mlflow.analysis._drift import SampleDrift, reference_text, sample_drift
from agility_mlflow.scoring import numbers

logger = logging.getLogger(__name__)

DEFAULT_CATEGORIES: dict[str, str] = {
    "wrong_number": "States a figure that differs from the reference's, or none where one is asked for.",
    "missing_unit": "Gives the right figure without its unit or scale ($, million, %).",
    "unsupported_claim": "Asserts something the context or the reference does not support.",
    "incomplete": "Leaves out part of what was asked, or stops before finishing (empty or cut off).",
    "too_verbose": "Buries the answer in far more text than the source used.",
    "refusal": "Declines to answer, or says the information is not available.",
    "format": "Breaks the format the source kept (JSON and its keys, lists, headers).",
    "ignored_instruction": "Does not follow an explicit instruction of the prompt (length, style, language).",
    "other": "None of the above.",
}
OTHER = "other"
CANDIDATE, SOURCE = "candidate", "source"
CATEGORY_COLUMNS = ("error_category", "error_reason", "error_cluster", "analyzed_because", "error_category_error")
_VERBOSE_RATIO = 2.0
_VERBOSE_MIN_WORDS = 20
_MAX_CLUSTERS = 8

CATEGORY_SCHEMA_REASON = {"type": "string", "maxLength": 300}
_SYSTEM = """You analyze the errors of an AI assistant that is replacing another one (the source).
On this sample the candidate's answer scored below the source's answer or below the bar.
Pick the one category that best explains what is wrong with the candidate's answer:
{categories}
Reply with one JSON object and nothing else: {{"category": "<one of: {names}>", "reason": "<one sentence naming the error>"}}."""


def taxonomy(categories: Mapping[str, str] | None) -> dict[str, str]:
    """The categories in use: the config's (with ``other`` added when missing) or :data:`DEFAULT_CATEGORIES`.

    Example:
        >>> list(taxonomy({"tone": "Too casual."}))
        ['tone', 'other']
    """
    chosen = dict(categories) if categories else dict(DEFAULT_CATEGORIES)
    chosen.setdefault(OTHER, DEFAULT_CATEGORIES[OTHER])
    return chosen


@dataclass(frozen=True)
class Failure:
    """One analyzed sample of one side (``candidate`` or ``source``) and why it was picked."""

    sample_id: str
    side: str
    score: float | None
    other_score: float | None
    picked_because: str


def failing_samples(
    source_rows: Sequence[Mapping[str, Any]],
    candidate_rows: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    higher_is_better: bool = True,
    threshold: float | None = None,
) -> list[Failure]:
    """The samples each side loses on ``metric``: below the other side (paired) or below ``threshold``.

    Samples with an error or without a score on a side are not analyzed for that side (errors are counted apart).

    Example:
        >>> src = [{"sample_id": "a", "error": None, "f1": 0.9}, {"sample_id": "b", "error": None, "f1": 0.2}]
        >>> cand = [{"sample_id": "a", "error": None, "f1": 0.5}, {"sample_id": "b", "error": None, "f1": 0.6}]
        >>> [(f.sample_id, f.side, f.picked_because) for f in failing_samples(src, cand, "f1")]
        [('a', 'candidate', 'f1 0.5 < source 0.9'), ('b', 'source', 'f1 0.2 < candidate 0.6')]
    """
    src, cand = _scores(source_rows, metric), _scores(candidate_rows, metric)
    failures = []
    for sample_id in dict.fromkeys([*cand, *src]):
        for side, own, other, other_name in ((CANDIDATE, cand, src, SOURCE), (SOURCE, src, cand, CANDIDATE)):
            mine, theirs = own.get(sample_id), other.get(sample_id)
            if mine is None:
                continue
            why = None
            if theirs is not None and (mine < theirs if higher_is_better else mine > theirs):
                why = f"{metric} {mine:.3g} {'<' if higher_is_better else '>'} {other_name} {theirs:.3g}"
            elif threshold is not None and (mine < threshold if higher_is_better else mine > threshold):
                why = f"{metric} {mine:.3g} {'<' if higher_is_better else '>'} threshold {threshold:g}"
            if why:
                failures.append(Failure(sample_id, side, mine, theirs, why))
    return failures


def _scores(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, float]:
    out = {}
    for row in rows:
        value = row.get(metric)
        if row.get("error") is None and isinstance(value, (int, float)) and value == value:
            out[str(row["sample_id"])] = float(value)
    return out


@dataclass
class Categorized:
    """One analyzed sample's category.

    Attributes:
        failure: The sample and why it was analyzed.
        category: A taxonomy name; ``None`` when the judge gave no usable reply (``judge_error`` says why).
        reason: One sentence: the judge's, or the drift signal's.
        cluster: Offline: the top terms of the sample's cluster of failing answers.
        judge: The judge's usage for this sample (``judge_calls``, tokens, ``judge_cost_usd``); empty offline.
    """

    failure: Failure
    category: str | None
    reason: str
    cluster: str | None = None
    judge_error: str | None = None
    judge: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The ``analysis.json`` columns of this sample (:data:`CATEGORY_COLUMNS`, then the judge's usage)."""
        values = (self.category, self.reason, self.cluster, self.failure.picked_because, self.judge_error)
        return {**dict(zip(CATEGORY_COLUMNS, values)), **self.judge}


def rule_category(drift: SampleDrift, reference: str, answer: str) -> tuple[str, str] | None:
    """The default category a drift signal shows, with its reason; ``None`` when no signal explains the loss.

    Example:
        >>> from agility_mlflow.analysis._drift import sample_drift
        >>> d = sample_drift({"output": "Revenue was $1,577 million.", "reference": "$1,577 million"},
        ...                  {"output": "1,577", "reference": "$1,577 million"})
        >>> rule_category(d, "$1,577 million", "1,577")
        ('missing_unit', "gives the figure without the reference's unit or scale ($1,577 million)")
    """
    cand, src = drift.candidate, drift.source
    if cand.empty:
        return "incomplete", "empty answer"
    if cand.refusal and not src.refusal:
        return "refusal", "declines to answer where the other answer did"
    if cand.truncated:
        return "incomplete", f"cut off at the token limit ({cand.output_tokens or '?'} tokens)"
    if drift.json_broken:
        if not cand.is_json:
            return "format", "not JSON, where the other answer was JSON"
        return "format", f"JSON keys {sorted(cand.json_keys or [])} instead of {sorted(src.json_keys or [])}"
    if drift.markdown_lost:
        return "format", "drops the Markdown list or headers the other answer used"
    if drift.language_changed:
        return "ignored_instruction", f"answers in {cand.language} where the other answer used {src.language}"
    if drift.number_missing:
        return "wrong_number", f"gives no figure; the reference says {reference}"
    if drift.unit_dropped:
        return "missing_unit", f"gives the figure without the reference's unit or scale ({reference})"
    if numbers(reference) and cand.has_number and not _gives_reference_figures(answer, reference):
        figures = ", ".join(_figure_text(n) for n in numbers(answer)[:3])
        return "wrong_number", f"gives {figures}; the reference says {reference}"
    if drift.words_ratio is not None and drift.words_ratio >= _VERBOSE_RATIO and cand.words >= _VERBOSE_MIN_WORDS:
        return "too_verbose", f"{cand.words} words where the other answer used {src.words}"
    return None


def _gives_reference_figures(answer: str, reference: str) -> bool:
    from agility_mlflow.scoring import numeric_match

    return numeric_match(answer, [reference], {}) == 1.0


def _figure_text(number: Any) -> str:
    text = f"{number.value:.6g}"
    return f"{number.currency}{text}{' ' + number.scale if number.scale else ''}{'%' if number.percent else ''}"


def cluster_texts(texts: Sequence[str], n_clusters: int | None, *, seed: int = 0, top_terms: int = 3) -> tuple[list[int], list[str]]:
    """K-means clusters of TF-IDF vectors: each text's cluster, and each cluster's top terms (``a / b / c``).

    Deterministic for the same texts and seed. ``n_clusters`` ``None``: about one cluster per five
    texts, at most 8. Texts with no usable words form one cluster labelled ``(no words)``.
    """
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not texts:
        return [], []
    k = n_clusters or min(_MAX_CLUSTERS, max(1, round(len(texts) / 5)))
    k = max(1, min(k, len(set(texts))))
    vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[\w$%][\w.,%]*\b", lowercase=True)
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # empty vocabulary: nothing but stop words or blanks
        return [0] * len(texts), ["(no words)"]
    if k == 1:
        labels = [0] * len(texts)
        centroids = [matrix.mean(axis=0).A1]
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(matrix)
        labels = [int(label) for label in model.labels_]
        centroids = list(model.cluster_centers_)
    vocabulary = vectorizer.get_feature_names_out()
    names = [" / ".join(vocabulary[i] for i in centroid.argsort()[::-1][:top_terms] if centroid[i] > 0) or "(no words)" for centroid in centroids]
    return labels, names


def categorize_offline(
    failures: Sequence[Failure],
    source_rows: Mapping[str, Mapping[str, Any]],
    candidate_rows: Mapping[str, Mapping[str, Any]],
    categories: Mapping[str, str],
    *,
    n_clusters: int | None = None,
    seed: int = 0,
) -> list[Categorized]:
    """Categories from the drift signals, and a cluster for every sample; unexplained samples are ``other``.

    A signal's category that the taxonomy does not have (a custom ``analysis.categories``) falls to ``other``.
    """
    texts = []
    for failure in failures:
        own, _ = _sides(failure, source_rows, candidate_rows)
        texts.append(f"{own.get('output') or ''} {reference_text(own)}")
    labels, names = cluster_texts(texts, n_clusters, seed=seed)
    results = []
    for failure, label in zip(failures, labels):
        own, other = _sides(failure, source_rows, candidate_rows)
        drift = sample_drift(other, own)
        reference = reference_text(own) or reference_text(other)
        found = rule_category(drift, reference, str(own.get("output") or ""))
        cluster = names[label]
        if found is None or found[0] not in categories:
            category, reason = OTHER, f"no drift signal explains it; like the other failing answers about: {cluster}"
        else:
            category, reason = found
        results.append(Categorized(failure, category, reason, cluster))
    return results


def _sides(failure: Failure, source_rows: Mapping[str, Mapping[str, Any]], candidate_rows: Mapping[str, Mapping[str, Any]]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The analyzed side's row and the other side's (empty when the other side has no row)."""
    if failure.side == CANDIDATE:
        return candidate_rows[failure.sample_id], source_rows.get(failure.sample_id, {})
    return source_rows[failure.sample_id], candidate_rows.get(failure.sample_id, {})


def category_messages(
    failure: Failure,
    own: Mapping[str, Any],
    other: Mapping[str, Any],
    question: str | None,
    categories: Mapping[str, str],
    metric: str,
) -> list[dict[str, str]]:
    """The judge's messages for one analyzed sample."""
    listing = "\n".join(f"- {name}: {description}" for name, description in categories.items())
    system = _SYSTEM.format(categories=listing, names=", ".join(categories))
    other_name = SOURCE if failure.side == CANDIDATE else CANDIDATE
    parts = []
    if question:
        parts.append(f"<question>\n{question}\n</question>")
    reference = reference_text(own) or reference_text(other)
    if reference:
        parts.append(f"<reference_answer>\n{reference}\n</reference_answer>")
    if other.get("output") is not None:
        parts.append(f"<{other_name}_answer {metric}=\"{_score_text(failure.other_score)}\">\n{other['output']}\n</{other_name}_answer>")
    parts.append(f"<candidate_answer {metric}=\"{_score_text(failure.score)}\">\n{own.get('output') or ''}\n</candidate_answer>")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def _score_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def categorize_with_judge(
    failures: Sequence[Failure],
    source_rows: Mapping[str, Mapping[str, Any]],
    candidate_rows: Mapping[str, Mapping[str, Any]],
    categories: Mapping[str, str],
    judge: Any,
    *,
    questions: Mapping[str, str],
    metric: str,
    workers: int = 4,
) -> list[Categorized]:
    """The judge's category and reason for each sample, asked in parallel through its runner.

    A sample the judge gives no usable reply for (after ``judge.max_attempts``) gets no category and its
    ``judge_error``; its calls and cost are still counted.
    """
    from agility_mlflow.scoring import JudgeReplyError, JudgeUsage, current_usage

    names = list(categories)
    schema = {"type": "object", "properties": {"category": {"type": "string", "enum": names}, "reason": CATEGORY_SCHEMA_REASON},
              "required": ["category", "reason"]}

    def validate(value: Any) -> tuple[str, str]:
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        category = str(value.get("category"))
        if category not in categories:
            raise ValueError(f"category {category!r} is not one of: {', '.join(names)}")
        reason = value.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("no 'reason' text")
        return category, reason.strip()

    def one(failure: Failure) -> Categorized:
        own, other = _sides(failure, source_rows, candidate_rows)
        usage = JudgeUsage()
        token = current_usage.set(usage)
        try:
            messages = category_messages(failure, own, other, questions.get(failure.sample_id), categories, metric)
            category, reason = judge.structured(messages, schema, validate)
            error = None
        except JudgeReplyError as exc:
            category, reason, error = None, "", str(exc)
        finally:
            current_usage.reset(token)
        return Categorized(failure, category, reason, judge_error=error, judge=usage.columns())

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(failures) or 1)), thread_name_prefix="agility-analysis") as pool:
        results = list(pool.map(one, failures))
    unusable = [r for r in results if r.category is None]
    if unusable:
        logger.warning("analysis: the judge gave no usable category for %d sample(s); first: %s", len(unusable), unusable[0].judge_error)
    return results
