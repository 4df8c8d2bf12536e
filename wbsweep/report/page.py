"""The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

The page's Content-Security-Policy forbids every fetch, so it reads the same
offline as online, and nothing in it can call out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape
from typing import Any

from wbsweep.report import data, svg
from wbsweep.report.data import SweepReport

__all__ = ["IMPORTANCE_METHOD", "goodness", "render_html"]

#: What the importance column means, on the page and in docs/REPORT.md.
IMPORTANCE_METHOD = (
    "Importance is how well a run's objective can be told from the runs nearest to it in the "
    "parameter, the run itself left out: a leave-one-out R\u00b2 over the objective's ranks. "
    "Each run's rank is predicted by the mean rank of the other runs with the same value (a "
    "categorical parameter), or of the k runs nearest in the parameter's order (a numeric one; "
    "k = max(2, round(\u221an) \u2212 1), runs with the same value nearest); importance = 1 "
    "\u2212 squared error / variance of the ranks, at least 0. About 0: the parameter predicts "
    "no better than chance; near 1: it orders the objective. Spearman's rank correlation gives "
    "the direction of a numeric parameter's effect. Only runs with a finite objective that "
    "used the parameter count; with few runs, read it as a hint."
)

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 24px auto; max-width: 1100px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; }
.meta { color: #555; } .note { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fdecea; font-weight: 600; }
.badge { background: #d62728; color: #fff; border-radius: 3px; padding: 0 5px; font-size: 12px; }
.unused { color: #aaa; }
svg.plot { display: block; background: #fff; border: 1px solid #eee; margin: 8px 0; }
svg .grid { stroke: #eee; } svg .axis, svg .tick { stroke: #444; }
svg text { font-size: 11px; fill: #333; } svg .tick-label { fill: #555; }
svg polyline { fill: none; stroke-linejoin: round; opacity: 0.9; }
svg .best-so-far { fill: none; stroke: #d62728; stroke-width: 2; stroke-dasharray: 5 3; }
.legend { color: #555; font-size: 13px; }
.swatch { display: inline-block; width: 60px; height: 10px; vertical-align: middle;
          background: linear-gradient(to right, #440154, #3b528b, #21918c, #5ec962, #fde725); }
"""


def goodness(report: SweepReport) -> dict[str, float]:
    """Each scored run's objective scaled 0 (worst) to 1 (best), as the goal ranks them."""
    values = {run.id: float(run.objective) for run in report.scored}  # type: ignore[arg-type]
    if not values:
        return {}
    low, high = min(values.values()), max(values.values())
    span = high - low or 1.0
    scaled = {k: (v - low) / span for k, v in values.items()}
    return scaled if report.goal == "maximize" else {k: 1.0 - v for k, v in scaled.items()}


def render_html(report: SweepReport, now: dt.datetime | None = None) -> str:
    """The whole page for ``report``."""
    when = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    best = report.best
    sections = [_header(report, when), _runs_table(report)]
    if not report.scored:
        states = ", ".join(f"{n} {s}" for s, n in _state_counts(report).items()) or "no runs"
        sections.append(
            '<p class="note" id="no-results">No run has a finite objective yet '
            f"({escape(states)}): there is nothing to plot. Run the report again later.</p>"
        )
    else:
        shades = goodness(report)
        best_id = best.id if best else None
        sections += [
            _trials(report, best_id),
            _parallel(report, shades, best_id),
            _importance(report),
            _curves(report, shades, best_id),
        ]
    body = "\n".join(sections)
    title = escape(f"Sweep {report.sweep.id}")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _header(report: SweepReport, when: str) -> str:
    sweep, best = report.sweep, report.best
    found = (
        f'Best run <b id="best-run">{escape(best.id)}</b>: {escape(report.metric)} '
        f"{best.objective:.6g}."
        if best
        else "No best run yet (no finished run with a finite objective)."
    )
    return (
        f"<h1>Sweep {escape(sweep.id)}</h1>\n"
        f'<p class="meta">{escape(sweep.state.value.lower())}; {len(report.runs)} runs; '
        f"{escape(report.goal)} {escape(report.metric)}; "
        f"method {escape(str(sweep.config.get('method', '?')))}. Written {when}.</p>\n"
        f"<p>{found}</p>"
    )


def _runs_table(report: SweepReport) -> str:
    best = report.best
    params = report.params
    head = "".join(f"<th>{escape(p)}</th>" for p in params)
    rows = []
    for trial, run in enumerate(report.runs, start=1):
        is_best = best is not None and run.id == best.id
        cells = []
        for name in params:
            if name not in run.params:
                cells.append("<td></td>")
            elif name in run.unused_params:
                cells.append(f'<td class="unused" title="not used by this run">'
                             f"{escape(_show(run.params[name]))}</td>")  # fmt: skip
            else:
                cells.append(f'<td class="num">{escape(_show(run.params[name]))}</td>')
        objective = f"{run.objective:.6g}" if run.objective is not None else ""
        mark = ' <span class="badge">best</span>' if is_best else ""
        rows.append(
            f'<tr class="run{" best" if is_best else ""}" data-run="{escape(run.id)}">'
            f'<td class="num">{trial}</td><td>{escape(run.id)}{mark}</td>'
            f'<td>{escape(str(run.state))}</td><td class="num">{objective}</td>'
            f"{''.join(cells)}</tr>"
        )
    return (
        '<h2>Runs</h2>\n<table id="runs">\n'
        f"<thead><tr><th>#</th><th>run</th><th>state</th><th>{escape(report.metric)}</th>{head}"
        "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
    )


def _trials(report: SweepReport, best_id: str | None) -> str:
    points = data.trial_points(report.runs, report.goal)
    plot = svg.trials_svg(points, report.metric, report.goal, best_id)
    return (
        f"<h2>{escape(report.metric)} over trial order</h2>\n"
        f'<p class="legend">Each dot is a run (hollow: it did not finish, e.g. stopped early); '
        f"the dashed line is the best {escape(report.metric)} so far over finished runs "
        f"({'lowest' if report.goal == 'minimize' else 'highest'} is best).</p>\n{plot}"
    )


def _parallel(report: SweepReport, shades: dict[str, float], best_id: str | None) -> str:
    axes = data.parallel_axes(report)
    fixed = [p for p in report.params if p not in report.varied()]
    values = {p: run.params[p] for run in reversed(report.scored) for p in fixed if p in run.params}
    shown = ", ".join(f"{p}={_show(values[p])}" for p in fixed if p in values)
    note = f'<p class="legend">Same in every run: {escape(shown)}.</p>\n' if shown else ""
    if len(axes) < 2:
        return f'<h2>Parallel coordinates</h2>\n{note}<p class="note">No parameter varied.</p>'
    plot = svg.parallel_svg(axes, data.parallel_lines(report, axes), shades, best_id)
    return (
        "<h2>Parallel coordinates</h2>\n"
        f'<p class="legend">One axis per parameter that varied, then {escape(report.metric)}; '
        'one line per run with a finite objective, coloured worst <span class="swatch"></span> '
        "best; the best run in red.</p>\n" + note + plot
    )


def _importance(report: SweepReport) -> str:
    rows = data.param_importance(report)
    lines = []
    for row in rows:
        found = row.importance
        score = f"{found.score:.3f}" if found.score is not None else ""
        rho = f"{found.spearman:+.2f}" if found.spearman is not None else ""
        lines.append(
            f'<tr class="importance" data-param="{escape(row.name)}"><td>{escape(row.name)}</td>'
            f'<td class="num">{score}</td><td class="num">{rho}</td>'
            f"<td>{'same value' if found.by_value else 'nearest values'}</td>"
            f'<td class="num">{row.runs}</td>'
            f"<td>{escape(found.reason or '')}</td></tr>"
        )
    return (
        "<h2>Parameter importance</h2>\n"
        f'<p class="legend" id="importance-method">{escape(IMPORTANCE_METHOD)}</p>\n'
        + svg.importance_svg(rows)
        + '\n<table id="importance"><thead><tr><th>parameter</th><th>importance</th>'
        "<th>Spearman &rho;</th><th>neighbours</th><th>runs</th><th></th></tr></thead>\n<tbody>"
        + "\n".join(lines)
        + "</tbody></table>"
    )


def _curves(report: SweepReport, shades: dict[str, float], best_id: str | None) -> str:
    parts = ["<h2>Metric curves</h2>"]
    unkept, empty = data.without_history(report)
    if unkept:
        parts.append(
            f'<p class="note" id="no-history-kept">The backend keeps no per-step history for '
            f"{_runs_text(unkept, report)}.</p>"
        )
    if empty:
        parts.append(
            f'<p class="note" id="no-history">No history was reported by run(s) '
            f"{escape(', '.join(empty))}.</p>"
        )
    metrics = data.history_metrics(report)
    if not metrics and not (unkept or empty):
        parts.append('<p class="note">No run reported metrics by step.</p>')
    for metric in metrics:
        found = data.curves(report, metric)
        parts.append(
            f'<h3>{escape(metric)}</h3>\n<p class="legend">One line per run '
            f"({len(found)}), by training step; the best run in red.</p>\n"
            + svg.curves_svg(found, metric, shades, best_id)
        )
    return "\n".join(parts)


def _runs_text(ids: Sequence[str], report: SweepReport) -> str:
    if len(ids) == len(report.runs):
        return "any run of this sweep"
    return "run(s) " + escape(", ".join(ids))


def _state_counts(report: SweepReport) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in report.runs:
        counts[str(run.state)] = counts.get(str(run.state), 0) + 1
    return counts


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
