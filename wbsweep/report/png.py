"""The report's plots as PNG images, drawn with matplotlib from the same plot data as the page.

Images are rendered into memory; the caller writes them (all or none).
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable
from typing import Any

from wbsweep.report import data
from wbsweep.report.data import SweepReport
from wbsweep.report.page import goodness
from wbsweep.report.svg import BEST, colour

__all__ = ["render_pngs"]


def render_pngs(report: SweepReport) -> dict[str, bytes]:
    """``{file name: PNG bytes}``: trials, parallel coordinates, importance, one per metric."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    if not report.scored:
        return {}
    best = report.best
    best_id = best.id if best else None
    shades = goodness(report)
    out: dict[str, bytes] = {}
    drawers: list[tuple[str, Callable[[Any], bool | None]]] = [
        ("trials.png", lambda ax: _trials(ax, report, best_id)),
        ("parallel.png", lambda ax: _parallel(ax, report, shades, best_id)),
        ("importance.png", lambda ax: _importance(ax, report)),
    ]
    for metric in data.history_metrics(report):
        name = f"curves-{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric)}.png"
        drawers.append((name, functools.partial(_curves, report=report, metric=metric,
                                                shades=shades, best_id=best_id)))  # fmt: skip
    for name, draw in drawers:
        figure, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
        try:
            if draw(ax) is False:
                continue
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            out[name] = buffer.getvalue()
        finally:
            plt.close(figure)
    return out


def _trials(ax: Any, report: SweepReport, best_id: str | None) -> None:
    points = data.trial_points(report.runs, report.goal)
    done = [p for p in points if p.finished]
    other = [p for p in points if not p.finished]
    ax.scatter([p.trial for p in done], [p.objective for p in done], color="#1f77b4", zorder=3)
    ax.scatter([p.trial for p in other], [p.objective for p in other], facecolors="none",
               edgecolors="#1f77b4", zorder=3)  # fmt: skip
    steps = [p for p in points if p.best_so_far is not None]
    if steps:
        xs = [p.trial for p in steps] + [max(p.trial for p in points)]
        ys = [p.best_so_far for p in steps] + [steps[-1].best_so_far]
        ax.step(xs, ys, where="post", color=BEST, linestyle="--", label="best so far")
        ax.legend(loc="best")
    for p in points:
        if p.run_id == best_id:
            ax.scatter([p.trial], [p.objective], color=BEST, s=80, zorder=4)
    ax.set_xlabel("trial (order the runs started)")
    ax.set_ylabel(f"{report.metric} ({report.goal})")
    ax.set_title(f"{report.metric} over trial order")


def _parallel(ax: Any, report: SweepReport, shades: dict[str, float], best_id: str | None) -> bool:
    axes = data.parallel_axes(report)
    if len(axes) < 2:
        return False
    lines = data.parallel_lines(report, axes)
    order = sorted(lines, key=lambda r: (r == best_id, shades.get(r, 0.0)))
    for run_id in order:
        pts = [(i, p) for i, p in enumerate(lines[run_id]) if p is not None]
        best = run_id == best_id
        ax.plot([i for i, _ in pts], [p for _, p in pts], linewidth=3 if best else 1.2,
                color=BEST if best else colour(shades.get(run_id, 0.0)))  # fmt: skip
    for i, axis in enumerate(axes):
        ax.axvline(i, color="#444", linewidth=0.8)
        for place, text in axis.ticks():
            ax.text(i + 0.03, place, text, fontsize=8, va="center")
    ax.set_xticks(range(len(axes)))
    ax.set_xticklabels([a.name + (" (log)" if a.kind == "log" else "") for a in axes])
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.1, len(axes) - 0.6)
    ax.set_title("parallel coordinates")
    return True


def _importance(ax: Any, report: SweepReport) -> bool:
    rows = [r for r in data.param_importance(report) if r.importance.score is not None]
    if not rows:
        return False
    names = [r.name for r in rows][::-1]
    scores = [r.importance.score for r in rows][::-1]
    ax.barh(names, scores, color="#1f77b4")
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance (leave-one-out R² of objective ranks)")
    ax.set_title("parameter importance")
    return True


def _curves(
    ax: Any, report: SweepReport, metric: str, shades: dict[str, float], best_id: str | None
) -> bool:
    found = data.curves(report, metric)
    if not found:
        return False
    for curve in sorted(found, key=lambda c: (c.run_id == best_id, shades.get(c.run_id, 0.0))):
        best = curve.run_id == best_id
        ax.plot(curve.steps, curve.values, marker="o", markersize=3,
                linewidth=3 if best else 1.2,
                color=BEST if best else colour(shades.get(curve.run_id, 0.0)))  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by step, one line per run")
    return True
