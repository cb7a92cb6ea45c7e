"""The report's plots as PNG bytes: quality against cost with the Pareto front, latency
distributions, and each metric's difference to the source with its confidence interval.

Figures are drawn with matplotlib's object API on the Agg canvas: no pyplot state, no display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

OUTCOME_COLOURS = {"source": "#1f4e79", "pass": "#2e7d32", "insufficient": "#ef6c00", "fail": "#c62828", "not decided": "#9e9e9e"}


@dataclass(frozen=True)
class Point:
    """One run on the quality-cost plane."""

    label: str
    cost: float
    quality: float
    outcome: str


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and quality (higher), by cost.

    Example:
        >>> pareto_front([(1.0, 0.5), (2.0, 0.9), (1.5, 0.4), (3.0, 0.9), (0.5, 0.1)])
        [4, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def quality_cost_png(points: Sequence[Point], metric: str) -> bytes:
    """Scatter of cost per sample against ``metric``, the Pareto front drawn as a step line."""
    figure, axes = _figure(7.5, 4.8)
    for outcome, colour in OUTCOME_COLOURS.items():
        chosen = [p for p in points if p.outcome == outcome]
        if chosen:
            axes.scatter([p.cost for p in chosen], [p.quality for p in chosen], c=colour, label=outcome, s=60 if outcome == "source" else 30,
                         marker="*" if outcome == "source" else "o", zorder=3)
    front = [points[i] for i in pareto_front([(p.cost, p.quality) for p in points])]
    if len(front) > 1:
        axes.step([p.cost for p in front], [p.quality for p in front], where="post", color="#555555", linestyle="--", label="Pareto front", zorder=2)
    for p in front:
        axes.annotate(p.label, (p.cost, p.quality), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("cost per sample (USD)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} against cost")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return _png(figure)


def latency_png(series: Sequence[tuple[str, Sequence[float]]]) -> bytes:
    """One horizontal box plot of per-sample latency per run."""
    figure, axes = _figure(7.5, 0.9 + 0.35 * max(1, len(series)))
    present = [(label, values) for label, values in series if values]
    if present:
        axes.boxplot([list(values) for _, values in present], vert=False, showfliers=True, widths=0.6)
        axes.set_yticks(range(1, len(present) + 1), [label for label, _ in present], fontsize=7)
        axes.invert_yaxis()
    axes.set_xlabel("latency per sample (s)")
    axes.set_title("Latency distributions")
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def difference_png(
    metric: str,
    rows: Sequence[tuple[str, float, float, float, str]],
    margin: float,
    higher_is_better: bool,
    confidence: float,
) -> bytes:
    """Bars of candidate - source for ``metric`` with confidence-interval error bars and the margin line.

    Args:
        rows: ``(label, difference, ci_low, ci_high, outcome)`` per candidate.
    """
    figure, axes = _figure(7.5, 0.9 + 0.35 * max(1, len(rows)))
    positions = list(range(len(rows)))
    differences = [r[1] for r in rows]
    errors = [[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]]
    colours = [OUTCOME_COLOURS.get(r[4], "#9e9e9e") for r in rows]
    axes.barh(positions, differences, xerr=errors, color=colours, alpha=0.8, capsize=3)
    axes.set_yticks(positions, [r[0] for r in rows], fontsize=7)
    axes.invert_yaxis()
    axes.axvline(0.0, color="#333333", linewidth=0.8)
    axes.axvline(-margin if higher_is_better else margin, color="#c62828", linestyle="--", linewidth=1, label=f"margin {margin:g}")
    axes.set_xlabel(f"{metric}: candidate - source ({confidence:.0%} interval)" + ("" if higher_is_better else ", lower is better"))
    axes.set_title(f"{metric} against the source")
    axes.legend(fontsize=7, loc="best")
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def _figure(width: float, height: float):  # type: ignore[no-untyped-def]
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.subplots()


def _png(figure) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
