"""How a sweep and its runs read: the status table, the sweeps list and their JSON form.

Pure functions over records; the CLI prints what they return.

>>> from wbsweep.backends.base import RunRecord, RunState
>>> print(runs_table([RunRecord("a1", "s", RunState.FINISHED, {"lr": 0.001}, objective=0.5),
...                   RunRecord("b2", "s", RunState.FAILED, {"lr": 0.1}, reason="OOM")], "loss"))
run   state     loss  params    ranks  claimed  started  took  step  note
a1 *  finished  0.5   lr=0.001
b2    failed          lr=0.1                                         OOM
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from wbsweep.backends.base import RunRecord, RunState, SweepRecord
from wbsweep.best import select_best
from wbsweep.errors import NoBestRunError
from wbsweep.shape import sweep_shape

__all__ = [
    "best_of",
    "duration",
    "failure_logs",
    "grid_size",
    "ordered",
    "run_counts",
    "runs_table",
    "short_params",
    "status_json",
    "status_line",
    "status_text",
    "steps",
    "sweeps_table",
    "took",
]


def status_json(
    sweep: SweepRecord, runs: Sequence[RunRecord], logs: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The sweep and every field of every run, with its trial's log where one was kept."""
    logs = logs or {}
    return {
        "sweep_id": sweep.id,
        "state": sweep.state,
        "metric": {"name": sweep.metric_name, "goal": sweep.goal},
        "run_cap": sweep.run_cap,
        "trial_shape": _shape_json(sweep),
        "runs": [{**dataclasses.asdict(run), "log": logs.get(run.id)} for run in runs],
    }


def _shape_json(sweep: SweepRecord) -> dict[str, Any] | None:
    shape = sweep_shape(sweep.config.get("command"))
    if not shape.recorded:
        return None
    return {**dataclasses.asdict(shape), "accelerate_args": list(shape.accelerate_args)}


def failure_logs(runs: Sequence[RunRecord], logs: Mapping[str, str]) -> list[str]:
    """``Log of RUN: PATH`` for each failed or crashed run whose trial log was kept."""
    failed = [run for run in runs if run.state in ("failed", "crashed") and run.id in logs]
    return [f"Log of {run.id}: {logs[run.id]}" for run in failed]


def grid_size(config: Mapping[str, Any]) -> int | None:
    """How many runs a grid sweep has, or None (not a grid, or a parameter not a list).

    >>> grid_size({"method": "grid", "parameters": {"a": {"values": [1, 2, 3]},
    ...                                             "b": {"value": 0}}})
    3
    >>> grid_size({"method": "random", "parameters": {"a": {"values": [1, 2]}}}) is None
    True
    """
    if config.get("method") != "grid":
        return None
    size = 1
    for spec in (config.get("parameters") or {}).values():
        if not isinstance(spec, Mapping):
            return None
        if "values" in spec:
            size *= len(spec["values"])
        elif "value" not in spec:
            return None
    return size


def status_line(sweep: SweepRecord, runs: Sequence[RunRecord]) -> str:
    """``Sweep ID: running, 3/8 runs, minimize loss; 2 GPUs per trial, bf16``."""
    of = sweep.run_cap or grid_size(sweep.config)
    cap = f"/{of}" if of else ""
    shape = sweep_shape(sweep.config.get("command"))
    return (
        f"Sweep {sweep.id}: {sweep.state.lower()}, {len(runs)}{cap} runs, "
        f"{sweep.goal} {sweep.metric_name}" + (f"; {shape.describe()}" if shape.recorded else "")
    )


def status_text(
    sweep: SweepRecord,
    runs: Sequence[RunRecord],
    logs: Mapping[str, str] | None = None,
    now: float | None = None,
) -> str:
    """What ``wbsweep status`` prints: the sweep's line, its runs best first, failed logs."""
    lines = [status_line(sweep, runs), runs_table(runs, sweep.metric_name, sweep.goal, now=now)]
    if best_of(runs, sweep.goal) is not None:
        lines.append("* best so far")
    return "\n".join(lines + failure_logs(runs, logs or {}))


def ordered(runs: Sequence[RunRecord], goal: str) -> list[RunRecord]:
    """Runs with a finite objective first, best first by ``goal``; then the others, oldest first.

    >>> from wbsweep.backends.base import RunRecord, RunState
    >>> runs = [RunRecord(i, "s", RunState.FINISHED, {}, objective=v)
    ...         for i, v in [("a", 0.3), ("b", None), ("c", 0.1), ("d", 0.3)]]
    >>> [r.id for r in ordered(runs, "minimize")], [r.id for r in ordered(runs, "maximize")]
    (['c', 'a', 'd', 'b'], ['a', 'd', 'c', 'b'])
    """
    sign = 1.0 if goal == "minimize" else -1.0
    scored = [r for r in runs if r.has_finite_objective]
    scored.sort(key=lambda r: sign * float(r.objective))  # type: ignore[arg-type]
    return scored + [r for r in runs if not r.has_finite_objective]


def best_of(runs: Sequence[RunRecord], goal: str) -> RunRecord | None:
    """The best run so far (as ``wbsweep best`` chooses), or None before one finished."""
    try:
        return select_best(runs, goal)
    except NoBestRunError:
        return None


def runs_table(
    runs: Sequence[RunRecord], metric: str, goal: str = "minimize", *, now: float | None = None
) -> str:
    """One line per run, best first: state, objective, params, ranks, times, step, note.

    ``*`` after its id marks the best run; ``claimed`` is when a worker took the run, ``started``
    its first training step, ``took`` the time from its start (else its claim) to
    its end, or to ``now`` while it runs.
    """
    now = time.time() if now is None else now
    best = best_of(runs, goal)
    header = ["run", "state", metric, "params", "ranks", "claimed", "started", "took"]
    header += ["step", "note"]
    rows = [header]
    for run in ordered(runs, goal):
        rows.append(
            [
                f"{run.id} *" if best is not None and run.id == best.id else run.id,
                str(run.state),
                f"{run.objective:.6g}" if run.objective is not None else "",
                _params(run.params, run.unused_params),
                _ranks(run.ran_as),
                _clock(run.claimed_at),
                _clock(run.started_at),
                duration(took(run, now)),
                steps(run.progress),
                _note(run),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def sweeps_table(entries: Sequence[tuple[SweepRecord, Sequence[RunRecord]]]) -> str:
    """One line per sweep: id, state, runs by state of its cap, the best objective, created.

    >>> from wbsweep.backends.base import RunRecord, RunState, SweepRecord, SweepState
    >>> sweep = SweepRecord("s1", {"run_cap": 4, "metric": {"name": "loss"}}, SweepState.RUNNING)
    >>> print(sweeps_table([(sweep, [RunRecord("a", "s1", RunState.FINISHED, {}, objective=.5),
    ...                              RunRecord("b", "s1", RunState.FAILED, {})])]))
    sweep  state    runs                       best          created
    s1     running  1 finished, 1 failed of 4  loss=0.5 (a)
    """
    rows = [["sweep", "state", "runs", "best", "created"]]
    for sweep, runs in entries:
        best = best_of(runs, sweep.goal)
        of = sweep.run_cap or grid_size(sweep.config)
        rows.append(
            [
                sweep.id,
                sweep.state.lower(),
                run_counts(runs) + (f" of {of}" if of else ""),
                f"{sweep.metric_name}={best.objective:.6g} ({best.id})" if best else "",
                _when(sweep.created_at),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run_counts(runs: Sequence[RunRecord]) -> str:
    """``3 finished, 1 running``: how many runs are in each state (``0`` for none)."""
    counts = {state: sum(r.state == state for r in runs) for state in RunState}
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "0"


def took(run: RunRecord, now: float) -> float | None:
    """Seconds from the run's first step (else its claim) to its end, or to ``now``."""
    start = run.started_at or run.claimed_at
    if start is None:
        return None
    end = run.finished_at if run.state.terminal else now
    return max(0.0, end - start) if end is not None else None


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``.

    >>> duration(42.4), duration(185), duration(3725), duration(None)
    ('42s', '3m05s', '1h02m', '')
    """
    if seconds is None:
        return ""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def steps(progress: Mapping[str, Any]) -> str:
    """``40/100`` (or ``40`` with no known total) from a run's progress report."""
    if progress.get("step") is None:
        return ""
    total = progress.get("total")
    return f"{progress['step']}/{total}" if total else str(progress["step"])


def short_params(params: Mapping[str, Any], unused: frozenset[str] = frozenset()) -> str:
    """``lr=0.001 bs=16``: the params a run used, floats to 4 significant digits."""
    return _params(params, unused)


def _params(params: Mapping[str, Any], unused: frozenset[str] = frozenset()) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items() if k not in unused)


def _note(run: RunRecord, width: int = 60) -> str:
    """A rerun names the run it reruns; a failed run says why (``--json`` has it whole)."""
    parts = [f"rerun of {run.retry_of}"] if run.retry_of else []
    unused = {k: v for k, v in run.params.items() if k in run.unused_params}
    if unused:  # sampled for another branch of hp_space: this run did not use them
        parts.append(f"unused: {_params(unused)}")
    if run.ran_as.get("override"):
        parts.append("shape overridden by its agent")
    if run.requeues:
        parts.append(f"requeued after {run.requeues} crash{'es' if run.requeues > 1 else ''}")
    if run.reason:
        reason = run.reason if len(run.reason) <= width else run.reason[: width - 3] + "..."
        parts.append(reason)
    return "; ".join(parts)


def _ranks(ran_as: Mapping[str, Any]) -> str:
    """``2``, ``2 bf16`` or ``4 on 2 nodes``: how the trial ran, where it said so."""
    if not ran_as:
        return ""
    text = str(ran_as.get("ranks", ""))
    if ran_as.get("nodes"):
        text += f" on {ran_as['nodes']} nodes"
    precision = ran_as.get("mixed_precision")
    return text + (f" {precision}" if precision and precision != "no" else "")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else ""


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""
