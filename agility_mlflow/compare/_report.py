"""The comparison report: the AWS method's tables, plots and worst samples, as HTML and Markdown.

``report.html`` is self-contained (plots embedded as base64 PNG, no script, every model output and
name escaped, so a ``<script>`` in an answer stays text). ``report.md`` carries the same tables,
with the plots as PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agility_mlflow.compare import _plots
from agility_mlflow.compare._decision import Verdict, metric_direction
from agility_mlflow.compare._result import Comparison
from agility_mlflow.compare._runs import RunRecord

_MAX_PLOTTED_RUNS = 20
_MAX_TEXT = 400
PERFORMANCE_COLUMNS = (
    ("n_samples", "Samples", 0),
    ("n_errors", "Errors", 0),
    ("input_tokens_mean", "Avg input tokens", 1),
    ("output_tokens_mean", "Avg output tokens", 1),
    ("cost_usd_per_sample", "Cost / sample (USD)", 6),
    ("cost_usd_total", "Cost total (USD)", 4),
    ("latency_mean_s", "Latency mean (s)", 2),
    ("latency_p50_s", "Latency p50 (s)", 2),
    ("latency_p95_s", "Latency p95 (s)", 2),
    ("ttft_p50_s", "TTFT p50 (s)", 2),
    ("ttft_p95_s", "TTFT p95 (s)", 2),
)


@dataclass(frozen=True)
class Table:
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    file_name: str
    title: str
    png: bytes


@dataclass(frozen=True)
class Report:
    """A rendered report: ``html`` and ``markdown`` text and the PNG ``figures`` they show."""

    html: str
    markdown: str
    figures: tuple[Figure, ...]

    def write(self, directory: str | Path) -> list[Path]:
        """Write ``report.html``, ``report.md`` and the PNG files into ``directory``; returns the paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "report.html", directory / "report.md"]
        paths[0].write_text(self.html, encoding="utf-8")
        paths[1].write_text(self.markdown, encoding="utf-8")
        for figure in self.figures:
            path = directory / figure.file_name
            path.write_bytes(figure.png)
            paths.append(path)
        return paths


def build_report(comparison: Comparison) -> Report:
    """Render ``comparison`` as HTML and Markdown, with its figures."""
    tables = [_verdict_table(comparison), _performance_table(comparison), _quality_table(comparison), _difference_table(comparison)]
    tables += _analysis_tables(comparison)
    figures = _figures(comparison)
    worst = [_worst_table(comparison, v) for v in comparison.verdicts if v.run.rows is not None and comparison.decision.worst_samples]
    return Report(_html(comparison, tables, figures, worst), _markdown(comparison, tables, figures, worst), tuple(figures))


def _summary(comparison: Comparison) -> list[str]:
    counts = comparison.counts()
    d = comparison.decision
    margins = ", ".join(f"{m} {d.margins.get(m, d.margin):g}" for m in comparison.primary)
    limits = [
        text.format(value)
        for text, value in (
            ("cost per sample <= ${:g}", d.max_cost_per_sample_usd),
            ("latency p95 <= {:g} s", d.max_latency_p95_s),
            ("cost per sample <= {:g}x the source's", d.max_cost_ratio),
            ("latency p95 <= {:g}x the source's", d.max_latency_p95_ratio),
        )
        if value is not None
    ]
    lines = [
        comparison.winner_line().replace("winner: ", "Winner: ", 1),
        f"Source: {comparison.source.name} (run {comparison.source.run_id}).",
        f"{len(comparison.verdicts)} candidates decided: {counts['pass']} pass, {counts['insufficient']} insufficient, {counts['fail']} fail.",
        f"Rule: every primary metric non-inferior to the source on the same samples, {d.confidence:.0%} interval "
        f"({'McNemar with a Newcombe interval for 0/1 metrics, paired bootstrap otherwise' if d.method == 'auto' else 'paired bootstrap'}, "
        f"{d.bootstrap_resamples} resamples, seed {d.seed}); margins: {margins}; at least {d.min_samples} paired samples; "
        f"errors <= {d.max_error_rate:.0%}" + ("; " + "; ".join(limits) if limits else "") + ".",
    ]
    if comparison.stale:
        lines.append(
            f"{len(comparison.stale)} runs scored on another dataset than the source run are stale: listed, not decided."
        )
    if comparison.not_decided:
        lines.append(
            f"{len(comparison.not_decided)} more runs ranked below the best {d.max_runs} by {comparison.primary[0]} were not decided."
        )
    if comparison.run_id:
        lines.append(f"Comparison run: {comparison.run_id}.")
    return lines


def _verdict_table(comparison: Comparison) -> Table:
    rows = tuple(
        (v.run.name, v.run.role, v.outcome + (" (winner)" if v is comparison.winner else ""), "; ".join(v.reasons), v.run.run_id)
        for v in [*comparison.verdicts, *comparison.stale]
    )
    return Table("Verdicts", ("Run", "Role", "Verdict", "Reasons", "Run id"), rows)


def _runs(comparison: Comparison) -> list[tuple[RunRecord, str]]:
    return [(comparison.source, "source"), *[(v.run, v.outcome) for v in comparison.verdicts]]


def _performance_table(comparison: Comparison) -> Table:
    header = ("Run", "Role", "Verdict", *[label for _, label, _ in PERFORMANCE_COLUMNS])
    rows = tuple(
        (run.name, run.role, outcome if run.role != "source" else "-", *[_number(run.metrics.get(key), digits) for key, _, digits in PERFORMANCE_COLUMNS])
        for run, outcome in _runs(comparison)
    )
    return Table("Tokens, cost and latency", header, rows, "Means and percentiles over each run's successful samples.")


def _quality_table(comparison: Comparison) -> Table:
    header = ("Run", "Verdict", *comparison.metrics)
    rows = tuple(
        (run.name, outcome if run.role != "source" else "-", *[_number(run.metrics.get(m), 3) for m in comparison.metrics])
        for run, outcome in _runs(comparison)
    )
    return Table("Quality", header, rows, "Each run's mean over its own successful samples (as MLflow shows it).")


def _difference_table(comparison: Comparison) -> Table:
    header = ("Run", *[f"{m}{'' if m in comparison.primary else ' (reported only)'}" for m in comparison.metrics])
    rows = []
    for verdict in comparison.verdicts:
        cells = []
        for metric in comparison.metrics:
            c = verdict.comparison(metric)
            if c is None or c.difference is None:
                cells.append("-")
            else:
                label = f" {c.outcome}" if c.outcome is not None else ""  # reported-only metrics decide nothing
                cells.append(f"{c.difference:+.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}] n={c.n_paired}{label}")
        rows.append((verdict.run.name, *cells))
    note = (
        f"Candidate - source on the samples both answered, {comparison.decision.confidence:.0%} interval, n paired samples, "
        "and, for a primary metric, its outcome against its margin."
    )
    return Table("Difference to the source", header, tuple(rows), note)


def _analysis_tables(comparison: Comparison) -> list[Table]:
    """Drift side by side, error categories and slices (from the offline error analysis), when there is any."""
    from agility_mlflow.analysis import category_table, drift_table, slice_table

    analyses = [comparison.analyses[v.run.run_id] for v in comparison.verdicts if v.run.run_id in comparison.analyses]
    if not analyses:
        return []
    metric = analyses[0].metric
    tables = []
    header, rows = drift_table(analyses)
    if rows:
        tables.append(Table("Drift from the source", header, tuple(rows),
                            "Source and candidate on the samples both answered; no judge involved. Rates are over the samples each applies to."))
    header, rows = category_table(analyses)
    tables.append(Table("Error categories", header, tuple(rows),
                        f"Samples each side loses on {metric}, categorized offline (drift signals, then TF-IDF k-means clusters as 'other'); "
                        "`agility analyze` asks the judge when the config has one."))
    slices = [(a.run.name, s) for a in analyses for s in a.slices]
    if slices:
        header, rows = slice_table([s for _, s in slices])
        tables.append(Table("Slices", ("Run", *header), tuple((name, *row) for (name, _), row in zip(slices, rows)),
                            "The paired rule on each slice; 'worse': worse than the source by more than the margin, "
                            "Holm-adjusted over the run's slice tests; too few paired samples: insufficient."))
    return tables


def _worst_table(comparison: Comparison, verdict: Verdict) -> Table:
    metric = comparison.primary[0]
    higher_is_better = metric_direction(metric)
    source_rows = comparison.source.rows_by_id()
    candidate_rows = list(verdict.run.rows or ())

    def badness(row: Mapping[str, Any]) -> tuple[Any, ...]:
        value = row.get(metric)
        if row.get("error") is not None:
            return (0, 0.0, str(row["sample_id"]))
        if not isinstance(value, (int, float)) or math.isnan(value):
            return (2, 0.0, str(row["sample_id"]))
        return (1, value if higher_is_better else -value, str(row["sample_id"]))

    worst = sorted(candidate_rows, key=badness)[: comparison.decision.worst_samples]
    rows = []
    for row in worst:
        sample_id = str(row["sample_id"])
        source = source_rows.get(sample_id, {})
        answer = f"error: {row['error']}" if row.get("error") is not None else _text(row.get("output"))
        rows.append(
            (
                sample_id,
                _text(comparison.questions.get(sample_id)),
                _text(row.get("reference") if row.get("reference") is not None else source.get("reference")),
                answer,
                _number(row.get(metric), 3),
                _text(source.get("output")),
                _number(source.get(metric), 3),
            )
        )
    header = ("Sample", "Question", "Reference", f"{verdict.run.name} answer", metric, "Source answer", f"source {metric}")
    return Table(f"Worst samples: {verdict.run.name}", header, tuple(rows), f"Lowest {metric} first; failed samples lead.")


def _figures(comparison: Comparison) -> list[Figure]:
    figures = []
    metric = comparison.primary[0]
    points = [
        _plots.Point(run.name, run.metrics["cost_usd_per_sample"], run.metrics[metric], outcome)
        for run, outcome in [*_runs(comparison), *[(r, "not decided") for r in comparison.not_decided]]
        if run.metrics.get("cost_usd_per_sample") is not None and run.metrics.get(metric) is not None
    ]
    if points:
        figures.append(Figure("quality_cost.png", f"{metric} against cost per sample, with the Pareto front", _plots.quality_cost_png(points, metric)))
    plotted = [(run, outcome) for run, outcome in _runs(comparison) if run.rows is not None][:_MAX_PLOTTED_RUNS]
    series = [
        (run.name, [float(r["latency_s"]) for r in run.rows or () if r.get("error") is None and isinstance(r.get("latency_s"), (int, float))])
        for run, _ in plotted
    ]
    if any(values for _, values in series):
        figures.append(Figure("latency.png", "Latency per sample", _plots.latency_png(series)))
    for name in comparison.primary:
        rows = [
            (v.run.name, c.difference, c.ci_low, c.ci_high, v.outcome)
            for v in comparison.verdicts[:_MAX_PLOTTED_RUNS]
            if (c := v.comparison(name)) is not None and c.difference is not None and c.ci_low is not None and c.ci_high is not None
        ]
        if rows:
            d = comparison.decision
            png = _plots.difference_png(name, rows, d.margins.get(name, d.margin), metric_direction(name), d.confidence)
            figures.append(Figure(f"difference_{_safe(name)}.png", f"{name}: candidate - source with its confidence interval", png))
    return figures


def _html(comparison: Comparison, tables: Sequence[Table], figures: Sequence[Figure], worst: Sequence[Table]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(comparison.experiment)}: model comparison</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Model comparison: {e(comparison.experiment)}</h1>",
        "<ul class=\"summary\">" + "".join(f"<li>{e(line)}</li>" for line in _summary(comparison)) + "</ul>",
    ]
    for table in tables:
        parts.append(_html_table(table))
    if figures:
        parts.append("<h2>Plots</h2>")
    for figure in figures:
        data = base64.b64encode(figure.png).decode("ascii")
        parts.append(f'<figure><img alt="{e(figure.title)}" src="data:image/png;base64,{data}"><figcaption>{e(figure.title)}</figcaption></figure>')
    if worst:
        parts.append("<h2>Worst samples</h2>")
    for table in worst:
        parts.append(_html_table(table, level=3))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(table: Table, level: int = 2) -> str:
    e = html.escape
    head = "".join(f"<th>{e(cell)}</th>" for cell in table.header)
    body = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    note = f"<p class=\"note\">{e(table.note)}</p>" if table.note else ""
    return f"<h{level}>{e(table.title)}</h{level}>{note}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown(comparison: Comparison, tables: Sequence[Table], figures: Sequence[Figure], worst: Sequence[Table]) -> str:
    parts = [f"# Model comparison: {_md(comparison.experiment)}", "", *[f"- {_md(line)}" for line in _summary(comparison)], ""]
    for table in tables:
        parts += _md_table(table, "##")
    if figures:
        parts += ["## Plots", ""]
    for figure in figures:
        parts += [f"![{_md(figure.title)}]({figure.file_name})", ""]
    if worst:
        parts += ["## Worst samples", ""]
    for table in worst:
        parts += _md_table(table, "###")
    return "\n".join(parts)


def _md_table(table: Table, heading: str) -> list[str]:
    lines = [f"{heading} {_md(table.title)}", ""]
    if table.note:
        lines += [_md(table.note), ""]
    lines.append("| " + " | ".join(_md(c) for c in table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in table.rows]
    return [*lines, ""]


def _md(text: str) -> str:
    """A Markdown table cell: HTML escaped (Markdown renders raw HTML), pipes and newlines kept in the cell.

    Quotes need no escaping outside a tag, so ``run's`` stays readable in the raw file.

    Example:
        >>> _md("<script>x</script> | it's")
        "&lt;script&gt;x&lt;/script&gt; &#124; it's"
    """
    return html.escape(text, quote=False).replace("|", "&#124;").replace("\r", "").replace("\n", "<br>")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = " / ".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _number(value: Any, digits: int) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1400px}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top;white-space:pre-wrap;max-width:32rem}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafafa}
.note{color:#666;font-size:.85rem;margin:.2rem 0}
figure{margin:1rem 0}figcaption{color:#555;font-size:.85rem}img{max-width:100%}
""".strip()
