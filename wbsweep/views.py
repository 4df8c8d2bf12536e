"""How a sweep and its runs read: the status table and its JSON form.

Pure functions over records; the CLI prints what they return.

>>> from wbsweep.backends.base import RunRecord, RunState
>>> print(runs_table([RunRecord("a1", "s", RunState.FINISHED, {"lr": 0.001}, objective=0.5)],
...                  "loss"))
run  state     loss  params    ranks  started  seconds  note
a1   finished  0.5   lr=0.001
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from wbsweep.backends.base import RunRecord, SweepRecord
from wbsweep.shape import sweep_shape

__all__ = ["failure_logs", "runs_table", "status_json", "status_line"]


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


def status_line(sweep: SweepRecord, runs: Sequence[RunRecord]) -> str:
    """``Sweep ID: running, 3/8 runs, minimize loss; 2 GPUs per trial, bf16``."""
    cap = f"/{sweep.run_cap}" if sweep.run_cap else ""
    shape = sweep_shape(sweep.config.get("command"))
    return (
        f"Sweep {sweep.id}: {sweep.state.lower()}, {len(runs)}{cap} runs, "
        f"{sweep.goal} {sweep.metric_name}" + (f"; {shape.describe()}" if shape.recorded else "")
    )


def runs_table(runs: Sequence[RunRecord], metric: str) -> str:
    """One line per run: id, state, objective, params, claim time, seconds, rerun or reason."""
    header = ["run", "state", metric, "params", "ranks", "started", "seconds", "note"]
    rows = [header]
    for run in runs:
        took = run.finished_at - run.claimed_at if run.finished_at and run.claimed_at else None
        rows.append(
            [
                run.id,
                str(run.state),
                f"{run.objective:.6g}" if run.objective is not None else "",
                _params(run.params, run.unused_params),
                _ranks(run.ran_as),
                _clock(run.claimed_at),
                f"{took:.0f}" if took is not None else "",
                _note(run),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


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
