"""The report's plots as inline SVG: no script, no font or image to fetch.

Each function takes the plot data of :mod:`.data` and returns one ``<svg>``
element as text. Elements carry classes a reader (or a test) can count:
``curve`` (one per run in a metric chart), ``pc-axis`` and ``pc-line``
(parallel coordinates), ``trial`` (one per scored run), ``best-so-far``,
``bar`` (importance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from wbsweep.report.data import Axis, Curve, ParamImportance, TrialPoint

__all__ = ["colour", "curves_svg", "importance_svg", "nice_ticks", "parallel_svg", "trials_svg"]

#: From poor (0) to good (1): a colour-blind-safe ramp.
_RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
BEST = "#d62728"
_W, _H = 760, 320
_M = {"left": 64, "right": 20, "top": 16, "bottom": 44}


def colour(goodness: float) -> str:
    """A colour along the ramp, 0 = the worst objective, 1 = the best.

    >>> colour(0.0), colour(1.0)
    ('#440154', '#fde725')
    """
    g = min(1.0, max(0.0, goodness)) * (len(_RAMP) - 1)
    i = min(int(g), len(_RAMP) - 2)
    t = g - i
    rgb = (round(a + (b - a) * t) for a, b in zip(_RAMP[i], _RAMP[i + 1], strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def nice_ticks(low: float, high: float, count: int = 5, whole: bool = False) -> list[float]:
    """Round numbers spanning ``low..high`` (``whole``: whole numbers only).

    >>> nice_ticks(0.0, 1.0), nice_ticks(0, 2, 8, whole=True)
    ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [0, 1, 2])
    """
    if high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    if whole:
        step = max(1, round(step))
    first = math.ceil(low / step - 1e-9)
    ticks = []
    k = first
    while k * step <= high + step * 1e-9:
        ticks.append(k * step if whole else round(k * step, 12))
        k += 1
    return ticks


@dataclass(frozen=True)
class _Frame:
    """A plot area: data ranges mapped onto pixels, with axes and grid lines drawn."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float
    #: The x values are whole numbers (trials, steps): no tick between two of them.
    whole_x: bool = True

    def x(self, v: float) -> float:
        span = self.x_high - self.x_low or 1.0
        return _M["left"] + (v - self.x_low) / span * (_W - _M["left"] - _M["right"])

    def y(self, v: float) -> float:
        span = self.y_high - self.y_low or 1.0
        return _H - _M["bottom"] - (v - self.y_low) / span * (_H - _M["top"] - _M["bottom"])

    def axes(self, x_label: str, y_label: str) -> list[str]:
        out = []
        for t in nice_ticks(self.y_low, self.y_high):
            y = self.y(t)
            out.append(f'<line class="grid" x1="{_M["left"]}" x2="{_W - _M["right"]}" '
                       f'y1="{y:.1f}" y2="{y:.1f}"/>')  # fmt: skip
            out.append(_label(_M["left"] - 6, y + 4, _tick(t), "end"))
        for t in nice_ticks(self.x_low, self.x_high, 8, whole=self.whole_x):
            x = self.x(t)
            out.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" '
                       f'y1="{_H - _M["bottom"]}" y2="{_H - _M["bottom"] + 5}"/>')  # fmt: skip
            out.append(_label(x, _H - _M["bottom"] + 18, _tick(t), "middle"))
        out.append(f'<line class="axis" x1="{_M["left"]}" x2="{_W - _M["right"]}" '
                   f'y1="{_H - _M["bottom"]}" y2="{_H - _M["bottom"]}"/>')  # fmt: skip
        out.append(f'<line class="axis" x1="{_M["left"]}" x2="{_M["left"]}" '
                   f'y1="{_M["top"]}" y2="{_H - _M["bottom"]}"/>')  # fmt: skip
        out.append(_label((_M["left"] + _W - _M["right"]) / 2, _H - 6, x_label, "middle"))
        out.append(
            f'<text class="label" transform="translate(14 {(_H - _M["bottom"]) / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        )
        return out


def trials_svg(points: Sequence[TrialPoint], metric: str, goal: str, best_id: str | None) -> str:
    """The objective of each run in trial order, and the best-so-far line over finished runs."""
    if not points:
        return ""
    values = [p.objective for p in points]
    frame = _Frame(0.5, max(p.trial for p in points) + 0.5, *_padded(min(values), max(values)))
    out = frame.axes("trial (order the runs started)", f"{metric} ({goal})")
    steps = [p for p in points if p.best_so_far is not None]
    if steps:
        # A step line: level until the next finished run, then to its best-so-far.
        first = steps[0]
        path = [f"M{frame.x(first.trial):.1f},{frame.y(first.best_so_far):.1f}"]  # type: ignore[arg-type]
        for p in steps[1:]:
            path.append(f"H{frame.x(p.trial):.1f} V{frame.y(p.best_so_far):.1f}")  # type: ignore[arg-type]
        path.append(f"H{frame.x(frame.x_high - 0.5):.1f}")
        out.append(f'<path class="best-so-far" d="{" ".join(path)}"/>')
    for p in points:
        best = p.run_id == best_id
        fill = BEST if best else ("#1f77b4" if p.finished else "none")
        out.append(
            f'<circle class="trial{" best" if best else ""}" data-run="{escape(p.run_id)}" '
            f'cx="{frame.x(p.trial):.1f}" cy="{frame.y(p.objective):.1f}" r="{6 if best else 4}" '
            f'fill="{fill}" stroke="{BEST if best else "#1f77b4"}">'
            f"<title>trial {p.trial}, run {escape(p.run_id)}: {metric} {p.objective:.6g}"
            f"{'' if p.finished else ' (not finished)'}</title></circle>"
        )
    return _svg("trials", out)


def parallel_svg(
    axes: Sequence[Axis],
    lines: Mapping[str, Sequence[float | None]],
    goodness: Mapping[str, float],
    best_id: str | None,
) -> str:
    """One vertical axis per varied parameter and the objective; one line per scored run."""
    if len(axes) < 2:
        return ""
    top, bottom = _M["top"] + 14, _H - _M["bottom"]
    left, right = _M["left"], _W - 80
    xs = [left + i * (right - left) / (len(axes) - 1) for i in range(len(axes))]

    def y(place: float) -> float:
        return bottom - place * (bottom - top)

    out = []
    order = sorted(lines, key=lambda run_id: (run_id == best_id, goodness.get(run_id, 0.0)))
    for run_id in order:
        places = lines[run_id]
        best = run_id == best_id
        pts = [f"{x:.1f},{y(p):.1f}" for x, p in zip(xs, places, strict=True) if p is not None]
        out.append(
            f'<polyline class="pc-line{" best" if best else ""}" data-run="{escape(run_id)}" '
            f'points="{" ".join(pts)}" stroke="{BEST if best else colour(goodness.get(run_id, 0))}"'
            f' stroke-width="{3 if best else 1.5}"><title>run {escape(run_id)}</title></polyline>'
        )
    for x, axis in zip(xs, axes, strict=True):
        parts = [f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>']
        for place, text in axis.ticks():
            parts.append(f'<line class="tick" x1="{x - 4:.1f}" x2="{x:.1f}" '
                         f'y1="{y(place):.1f}" y2="{y(place):.1f}"/>')  # fmt: skip
            parts.append(_label(x + 5, y(place) + 4, text, "start", "tick-label"))
        kind = {"log": " (log)", "categorical": ""}.get(axis.kind, "")
        parts.append(_label(x, top - 6, axis.name + kind, "middle"))
        out.append(f'<g class="pc-axis" data-param="{escape(axis.name)}">{"".join(parts)}</g>')
    return _svg("parallel", out)


def importance_svg(rows: Sequence[ParamImportance]) -> str:
    """A horizontal bar per parameter with a score, longest first."""
    scored = [r for r in rows if r.importance.score is not None]
    if not scored:
        return ""
    bar, gap, left, width = 22, 8, 170, _W - 250
    height = len(scored) * (bar + gap) + 30
    out = []
    for i, row in enumerate(scored):
        score = row.importance.score or 0.0
        top = 10 + i * (bar + gap)
        out.append(_label(left - 8, top + bar * 0.7, row.name, "end"))
        out.append(
            f'<rect class="bar" data-param="{escape(row.name)}" x="{left}" y="{top}" '
            f'width="{max(1.0, score * width):.1f}" height="{bar}" fill="#1f77b4">'
            f"<title>{escape(row.name)}: {score:.3f}</title></rect>"
        )
        out.append(_label(left + max(1.0, score * width) + 6, top + bar * 0.7, f"{score:.2f}"))
    axis_y = 10 + len(scored) * (bar + gap)
    out.append(f'<line class="axis" x1="{left}" x2="{left + width}" y1="{axis_y}" y2="{axis_y}"/>')
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(_label(left + t * width, axis_y + 16, f"{t:g}", "middle"))
    return _svg("importance", out, height)


def curves_svg(
    found: Sequence[Curve], metric: str, goodness: Mapping[str, float], best_id: str | None
) -> str:
    """One line per run of ``metric`` against the training step; the best run on top."""
    if not found:
        return ""
    steps = [s for c in found for s in c.steps]
    values = [v for c in found for v in c.values]
    frame = _Frame(min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1,
                   *_padded(min(values), max(values)),
                   whole_x=all(float(s).is_integer() for s in steps))  # fmt: skip
    out = frame.axes("step", metric)
    for curve in sorted(found, key=lambda c: (c.run_id == best_id, goodness.get(c.run_id, 0.0))):
        best = curve.run_id == best_id
        stroke = BEST if best else colour(goodness.get(curve.run_id, 0.0))
        pts = " ".join(
            f"{frame.x(s):.1f},{frame.y(v):.1f}"
            for s, v in zip(curve.steps, curve.values, strict=True)
        )
        dots = "".join(
            f'<circle cx="{frame.x(s):.1f}" cy="{frame.y(v):.1f}" r="2.5" fill="{stroke}"/>'
            for s, v in zip(curve.steps, curve.values, strict=True)
        )
        out.append(
            f'<g class="curve{" best" if best else ""}" data-run="{escape(curve.run_id)}">'
            f'<polyline points="{pts}" stroke="{stroke}" stroke-width="{3 if best else 1.5}"/>'
            f"{dots}<title>run {escape(curve.run_id)}</title></g>"
        )
    return _svg("curves", out)


def _svg(kind: str, parts: Sequence[str], height: int = _H) -> str:
    body = "\n".join(parts)
    return (
        f'<svg class="plot {kind}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {_W} {height}" width="{_W}" height="{height}">\n{body}\n</svg>'
    )


def _label(x: float, y: float, text: str, anchor: str = "start", cls: str = "label") -> str:
    return (
        f'<text class="{cls}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'
    )


def _tick(value: float) -> str:
    return f"{value:.4g}"


def _padded(low: float, high: float) -> tuple[float, float]:
    """A value range with a margin, so points on its ends are not cut by the frame."""
    pad = (high - low) * 0.08 or abs(low) * 0.1 or 1.0
    return low - pad, high + pad
