"""The analysis as text: the one-screen terminal summary, ``analysis.md``, and the tables the compare report shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agility_mlflow.analysis._categories import CANDIDATE

if TYPE_CHECKING:
    from agility_mlflow.analysis._analyze import Analysis, RunAnalysis
    from agility_mlflow.analysis._slices import SliceResult

# Drift figures in display order: (name, label, kind); kind "rate" shows a percent, "mean" a number, "ratio" an x-factor.
DRIFT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("words_mean", "words per answer", "mean"),
    ("output_tokens_mean", "output tokens per answer", "mean"),
    ("truncated_rate", "cut off at max_tokens", "rate"),
    ("empty_rate", "empty answers", "rate"),
    ("refusal_rate", "refusals", "rate"),
    ("number_missing_rate", "no number where the reference has one", "rate"),
    ("unit_dropped_rate", "figure without its unit or scale", "rate"),
    ("json_rate", "JSON answers", "rate"),
    ("markdown_rate", "Markdown lists or headers", "rate"),
)
PAIRWISE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("words_ratio", "length in words, candidate / source", "ratio"),
    ("output_tokens_ratio", "length in tokens, candidate / source", "ratio"),
    ("json_broken_rate", "JSON broken or keys changed", "rate"),
    ("markdown_lost_rate", "Markdown the source used, dropped", "rate"),
    ("markdown_added_rate", "Markdown added", "rate"),
    ("language_changed_rate", "answers in another language", "rate"),
)
_EXAMPLE_TEXT = 70


def fmt(value: float | None, kind: str) -> str:
    """A drift figure as shown: ``42%``, ``11.2``, ``x3.75``; ``-`` when not applicable."""
    if value is None:
        return "-"
    if kind == "rate":
        return f"{100 * value:.0f}%"
    if kind == "ratio":
        return f"x{value:.2f}"
    return f"{value:.1f}"


def drift_lines(item: RunAnalysis) -> list[tuple[str, str, str]]:
    """(label, source, candidate) for every drift figure worth showing (applicable, and not 0% on both sides)."""
    lines = []
    d = item.drift
    for name, label, kind in DRIFT_ROWS:
        src, cand = d.source.get(name), d.candidate.get(name)
        if src is None and cand is None or (kind == "rate" and not src and not cand):
            continue
        lines.append((label, fmt(src, kind), fmt(cand, kind)))
    for name, label, kind in PAIRWISE_ROWS:
        value = d.pairwise.get(name)
        if value is None or (kind == "rate" and not value):
            continue
        lines.append((label, "", fmt(value, kind)))
    return lines


def headline(item: RunAnalysis) -> str:
    """One sentence: how often the candidate loses and its main error."""
    losing = item.side(CANDIDATE)
    mean = lambda run: run.metrics.get(item.metric)  # noqa: E731
    scores = f"{item.metric} {fmt_score(mean(item.run))} vs source {fmt_score(mean(item.source))}"
    if not losing:
        return f"{scores}; no sample loses to the source on {item.metric}"
    counts = sorted(((c, name) for name, (c, _) in item.counts().items() if c), key=lambda x: (-x[0], x[1]))
    top = counts[0]
    description = item.categories.get(top[1], "")
    text = f"{scores}; loses on {len(losing)} of {item.drift.n_paired} paired samples, mostly {top[1]} ({top[0]}): {description}"
    return text.rstrip()


def fmt_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short(text: Any, limit: int = _EXAMPLE_TEXT) -> str:
    value = " ".join(str(text if text is not None else "").split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def analysis_text(analysis: Analysis) -> str:
    """The terminal summary of ``agility analyze``."""
    lines = [f"Error analysis of {analysis.experiment}: source run {analysis.source.run_id}; a sample fails when it scores "
             f"below the other side on {analysis.metric}" + (f" or below {analysis.threshold:g}" if analysis.threshold is not None else "")]
    for item in analysis.runs:
        lines += ["", f"{item.run.name} (run {item.run.run_id}): {headline(item)}"]
        if item.n_errors:
            lines.append(f"  {item.n_errors} samples failed with an error (not analyzed)")
        drift = drift_lines(item)
        if drift:
            width = max(len(label) for label, _, _ in drift)
            lines.append(f"  {'drift (same samples)':<{width}}  {'source':>8}  {'candidate':>9}")
            lines += [f"  {label:<{width}}  {src:>8}  {cand:>9}" for label, src, cand in drift]
        by = f"judge {item.judge}" if item.judge else "offline: drift signals + clustering"
        lines.append(f"  why it loses, categorized by {by}:")
        lines.append(f"    {'category':<20} {'candidate':>9}  {'source':>6}  example")
        for name, (cand, src) in item.counts().items():
            if not cand and not src:
                continue
            example = item.examples(name, 1)
            shown = f"  {example[0].failure.sample_id}: {_short(example[0].reason)}" if example else ""
            lines.append(f"    {name:<20} {cand:>9}  {src:>6}{shown}")
        worse = [s for s in item.slices if s.outcome == "worse"]
        for result in worse:
            lines.append(f"  worse on {result.text}")
        insufficient = [s.name for s in item.slices if s.outcome == "insufficient"]
        if insufficient:
            lines.append(f"  slices with too few samples to test: {', '.join(dict.fromkeys(insufficient))}")
        totals = item.judge_totals()
        if totals:
            cost = totals.get("judge_cost_usd_total")
            lines.append(f"  judge: {totals['judge_calls']:.0f} calls, {totals['judge_input_tokens_total']:.0f} input / "
                         f"{totals['judge_output_tokens_total']:.0f} output tokens, " + (f"${cost:.6f}" if cost is not None else "cost unknown"))
    if analysis.output_dir is not None:
        lines += ["", f"details: {analysis.output_dir / 'analysis.md'}; per sample: analysis.json on each run"]
    return "\n".join(lines)


def analysis_markdown(analysis: Analysis) -> str:
    """``analysis.md``: the summary, then per candidate the drift, the categories with examples, and the slices."""
    parts = [f"# Error analysis: {analysis.experiment}", "", f"Source run `{analysis.source.run_id}`; metric `{analysis.metric}`.", ""]
    for item in analysis.runs:
        parts += [f"## {item.run.name}", "", headline(item), ""]
        parts += _md_table(("Drift (same samples)", "Source", "Candidate"), drift_lines(item))
        parts += [f"Categorized by: {item.judge or 'offline (drift signals + TF-IDF k-means clustering)'}.", ""]
        parts += _md_table(("Category", "Candidate", "Source", "Description"),
                           [(name, str(c), str(s), item.categories.get(name, "")) for name, (c, s) in item.counts().items()])
        for name, (count, _) in item.counts().items():
            examples = item.examples(name, analysis.examples)
            if not examples:
                continue
            parts += [f"### {name} ({count})", ""]
            rows = item.run.rows_by_id()
            parts += _md_table(("Sample", "Question", "Answer", "Reference", "Reason"),
                               [(e.failure.sample_id, _short(item.questions.get(e.failure.sample_id), 200),
                                 _short(rows.get(e.failure.sample_id, {}).get("output"), 200),
                                 _short(rows.get(e.failure.sample_id, {}).get("reference"), 200), _short(e.reason, 200)) for e in examples])
        if item.slices:
            parts += ["### Slices", ""] + _md_table(*slice_table(item.slices))
    return "\n".join(parts)


def slice_table(results: Sequence[SliceResult]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows) of a slice table: one row per slice and metric."""
    header: tuple[str, ...] = ("Slice", "Metric", "n paired", "Difference [CI]", "Holm p", "Outcome")
    rows: list[tuple[str, ...]] = []
    for r in results:
        c = r.comparison
        diff = "-" if c.difference is None else f"{c.difference:+.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]"
        rows.append((r.name, c.metric, str(c.n_paired), diff, "-" if r.p_holm is None else f"{r.p_holm:.3g}", str(r.outcome)))
    return header, rows


def category_table(items: Sequence[RunAnalysis]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows): per candidate and category, candidate and source counts with one example."""
    header: tuple[str, ...] = ("Run", "Category", "Candidate", "Source", "Example")
    rows: list[tuple[str, ...]] = []
    for item in items:
        for name, (cand, src) in item.counts().items():
            if cand or src:
                example = item.examples(name, 1)
                shown = f"{example[0].failure.sample_id}: {example[0].reason}" if example else ""
                rows.append((item.run.name, name, str(cand), str(src), shown))
    return header, rows


def drift_table(items: Sequence[RunAnalysis]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows): per candidate, each drift figure for the source and the candidate side by side."""
    header = ("Run", "Drift", "Source", "Candidate")
    return header, [(item.run.name, label, src, cand) for item in items for label, src, cand in drift_lines(item)]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return []
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]
