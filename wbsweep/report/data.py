"""What a sweep report shows, as plain data: read once from a backend, then pure functions.

:func:`collect` is the only I/O (through the backend contract, so any backend
works); everything else turns records into the numbers each plot draws, which
the HTML page (:mod:`.page`) and the PNG images (:mod:`.png`) both use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wbsweep.backends.base import Backend, RunRecord, SweepRecord
from wbsweep.best import select_best
from wbsweep.errors import NoBestRunError
from wbsweep.importance import Importance, importance, is_numeric
from wbsweep.states import RunState

__all__ = [
    "Axis",
    "Curve",
    "ParamImportance",
    "SweepReport",
    "TrialPoint",
    "collect",
    "curves",
    "history_metrics",
    "param_importance",
    "parallel_axes",
    "trial_points",
]

#: History keys that are bookkeeping, not something a run learned.
_NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "global_step")
#: A numeric axis with at most this many values labels each one.
_FEW = 6
#: W&B sweep distributions drawn on a log axis.
_LOG_DISTRIBUTIONS = ("log_uniform", "log_uniform_values", "q_log_uniform_values")


@dataclass(frozen=True)
class SweepReport:
    """A sweep, its runs oldest first, and each run's history (``None``: the backend keeps none)."""

    sweep: SweepRecord
    runs: list[RunRecord]
    histories: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.sweep.metric_name

    @property
    def goal(self) -> str:
        return self.sweep.goal

    @property
    def scored(self) -> list[RunRecord]:
        """Runs with a finite objective, whatever their state (a stopped run's last value)."""
        return [run for run in self.runs if run.has_finite_objective]

    @property
    def best(self) -> RunRecord | None:
        """The run ``wbsweep best`` picks: finished, finite objective, earlier on a tie."""
        try:
            return select_best(self.runs, self.goal)
        except NoBestRunError:
            return None

    @property
    def params(self) -> list[str]:
        """The sweep's parameters that runs were given, in the config's order."""
        names = list(self.sweep.config.get("parameters", {}))
        seen = {key for run in self.runs for key in run.params}
        return [n for n in names if n in seen] + sorted(seen - set(names))

    def varied(self) -> list[str]:
        """The parameters that took more than one value over the scored runs."""
        out = []
        for name in self.params:
            values = {repr(v) for v in _used_values(self.scored, name).values()}
            if len(values) > 1:
                out.append(name)
        return out

    def log_scale(self, name: str) -> bool:
        """Whether a numeric parameter reads best on a log axis (its distribution, or its span)."""
        spec = self.sweep.config.get("parameters", {}).get(name, {})
        if isinstance(spec, Mapping) and spec.get("distribution") in _LOG_DISTRIBUTIONS:
            return True
        values = list(_used_values(self.scored, name).values())
        return (
            is_numeric(values) and min(values) > 0 and max(values) / min(values) >= 100  # type: ignore[operator]
        )


def collect(backend: Backend, sweep_id: str) -> SweepReport:
    """Read a sweep, its runs and their histories from ``backend``.

    Raises:
        SweepNotFoundError: No such sweep.
    """
    sweep = backend.sweep(sweep_id)
    runs = backend.runs(sweep_id)
    histories = {run.id: backend.run_history(sweep_id, run.id) for run in runs}
    return SweepReport(sweep, runs, histories)


# -- objective over trial order ------------------------------------------------------------


@dataclass(frozen=True)
class TrialPoint:
    """One run with a finite objective, at its place in the sweep (1 = the first run)."""

    trial: int
    run_id: str
    objective: float
    finished: bool
    #: The best objective of the finished runs up to this one (``None``: none finished yet).
    best_so_far: float | None


def trial_points(runs: Sequence[RunRecord], goal: str) -> list[TrialPoint]:
    """The objective over trial order with the best-so-far line, as ``goal`` ranks them.

    >>> from wbsweep.backends.base import RunRecord, RunState
    >>> runs = [RunRecord(i, "s", RunState.FINISHED, {}, objective=v)
    ...         for i, v in (("a", 0.5), ("b", 0.7), ("c", 0.2))]
    >>> [p.best_so_far for p in trial_points(runs, "minimize")]
    [0.5, 0.5, 0.2]
    >>> [p.best_so_far for p in trial_points(runs, "maximize")]
    [0.5, 0.7, 0.7]
    """
    better = min if goal == "minimize" else max
    best: float | None = None
    points = []
    for trial, run in enumerate(runs, start=1):
        if not run.has_finite_objective:
            continue
        value = float(run.objective)  # type: ignore[arg-type]
        finished = run.state == RunState.FINISHED
        if finished:
            best = value if best is None else better(best, value)
        points.append(TrialPoint(trial, run.id, value, finished, best))
    return points


# -- parallel coordinates ------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One vertical axis of the parallel coordinates: a parameter, or the objective last.

    ``position(value)`` is where a value sits, 0 (bottom) to 1 (top); ``None``
    for a run that did not use the parameter.
    """

    name: str
    kind: str  # "linear", "log" or "categorical"
    low: float = 0.0
    high: float = 1.0
    categories: tuple[str, ...] = ()
    #: A numeric parameter's values, where it took few (each gets a tick).
    values: tuple[float, ...] = ()

    def position(self, value: Any) -> float | None:
        if value is None:
            return None
        if self.kind == "categorical":
            text = _text(value)
            if text not in self.categories:
                return None
            if len(self.categories) == 1:
                return 0.5
            return self.categories.index(text) / (len(self.categories) - 1)
        x = float(value)
        low, high = self.low, self.high
        if self.kind == "log":
            x, low, high = math.log10(x), math.log10(low), math.log10(high)
        return 0.5 if high == low else (x - low) / (high - low)

    def ticks(self) -> list[tuple[float, str]]:
        """Labelled places on the axis: every category, or the ends and the middle."""
        if self.kind == "categorical":
            return [(self.position(c) or 0.0, c) for c in self.categories]
        if self.low == self.high:
            return [(0.5, _number(self.low))]
        if self.values:
            return [(self.position(v) or 0.0, _number(v)) for v in self.values]
        if self.kind == "log":
            middle = 10 ** ((math.log10(self.low) + math.log10(self.high)) / 2)
        else:
            middle = (self.low + self.high) / 2
        return [(0.0, _number(self.low)), (0.5, _number(middle)), (1.0, _number(self.high))]


def parallel_axes(report: SweepReport) -> list[Axis]:
    """An axis per varied parameter, then the objective's, over the scored runs."""
    axes = []
    for name in report.varied():
        values = list(_used_values(report.scored, name).values())
        if is_numeric(values):
            kind = "log" if report.log_scale(name) else "linear"
            few = tuple(sorted(set(values))) if len(set(values)) <= _FEW else ()
            axes.append(Axis(name, kind, float(min(values)), float(max(values)), values=few))
        else:
            axes.append(Axis(name, "categorical", categories=tuple(_categories(values))))
    objectives = [float(run.objective) for run in report.scored]  # type: ignore[arg-type]
    if objectives:
        axes.append(Axis(report.metric, "linear", min(objectives), max(objectives)))
    return axes


def parallel_lines(report: SweepReport, axes: Sequence[Axis]) -> dict[str, list[float | None]]:
    """Each scored run's place on every axis (the objective's last)."""
    lines = {}
    for run in report.scored:
        used = {k: v for k, v in run.params.items() if k not in run.unused_params}
        places = [axis.position(used.get(axis.name)) for axis in axes[:-1]]
        lines[run.id] = [*places, axes[-1].position(run.objective)]
    return lines


# -- importance ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamImportance:
    name: str
    importance: Importance
    runs: int


def param_importance(report: SweepReport) -> list[ParamImportance]:
    """Every parameter's importance over the scored runs that used it, most important first."""
    out = []
    for name in report.params:
        used = _used_values(report.scored, name)
        objectives = {run.id: float(run.objective) for run in report.scored}  # type: ignore[arg-type]
        ids = list(used)
        found = importance([used[i] for i in ids], [objectives[i] for i in ids])
        out.append(ParamImportance(name, found, len(ids)))
    return sorted(out, key=lambda p: (p.importance.score is None, -(p.importance.score or 0.0)))


# -- metric curves -------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One run's values of one metric, by step."""

    run_id: str
    steps: tuple[float, ...]
    values: tuple[float, ...]


def history_metrics(report: SweepReport) -> list[str]:
    """The metrics worth a chart: the sweep metric first, then each ``eval_*`` metric logged."""
    keys: set[str] = set()
    for rows in report.histories.values():
        for row in rows or []:
            keys.update(k for k, v in row.items() if _is_number(v))
    extra = sorted(
        k
        for k in keys
        if k != report.metric
        and not k.startswith("_")
        and (k.startswith("eval_") or k.startswith("eval/"))
        and not k.endswith(_NOT_METRICS)
    )
    return ([report.metric] if report.metric in keys else []) + extra


def curves(report: SweepReport, metric: str) -> list[Curve]:
    """Every run's curve of ``metric`` (runs that logged it at one step at least)."""
    out = []
    for run in report.runs:
        rows = report.histories.get(run.id) or []
        points = [
            (float(row["_step"]), float(row[metric]))
            for row in rows
            if _is_number(row.get(metric)) and _is_number(row.get("_step"))
        ]
        if points:
            points.sort()
            out.append(Curve(run.id, tuple(p[0] for p in points), tuple(p[1] for p in points)))
    return out


def without_history(report: SweepReport) -> tuple[list[str], list[str]]:
    """Runs whose backend keeps no history, and runs that reported none."""
    unkept = [run.id for run in report.runs if report.histories.get(run.id) is None]
    empty = [run.id for run in report.runs if report.histories.get(run.id) == []]
    return unkept, empty


# -- helpers -------------------------------------------------------------------------------


def _used_values(runs: Sequence[RunRecord], name: str) -> dict[str, Any]:
    """``{run id: value}`` of a parameter, for the runs that used it."""
    return {
        run.id: run.params[name]
        for run in runs
        if name in run.params and name not in run.unused_params
    }


def _categories(values: Sequence[Any]) -> list[str]:
    """The distinct values as text, numbers in numeric order, the rest in first-seen order."""
    numbers = sorted({v for v in values if _is_number(v)})
    rest = list(dict.fromkeys(_text(v) for v in values if not _is_number(v)))
    return [_text(v) for v in numbers] + rest


def _text(value: Any) -> str:
    return _number(value) if _is_number(value) else str(value)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
