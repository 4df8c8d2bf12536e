"""W&B's sweeps and runs (``wandb.Api()`` objects) as wbsweep's records.

Pure mapping, no I/O: what W&B calls a state, where a summary keeps the
objective (a ``define_metric`` summary is ``{"min": v}``), which config keys
are the sweep's own parameters.

>>> summary_number({"min": 0.2, "last": 0.4}, "minimize"), sweep_state("pending")
(0.2, <SweepState.RUNNING: 'RUNNING'>)
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from wbsweep.backends.base import RunRecord, RunState, SweepRecord, SweepState

__all__ = [
    "PROGRESS_KEY",
    "RAN_AS_KEY",
    "WORKER_KEY",
    "REQUEUES_KEY",
    "run_record",
    "summary_number",
    "sweep_state",
]

#: The summary key that counts how often a crashed run was handed out again.
REQUEUES_KEY = "wbsweep/requeues"
#: The run's config key for how its trial ran (:func:`wbsweep.shape.ran_as`).
RAN_AS_KEY = "wbsweep/ran_as"
#: The run's config key for the worker that ran the trial (``wbsweep agent`` names it).
WORKER_KEY = "wbsweep/worker"
#: The summary key where a trial's rank 0 keeps where it is (``RunRecord.progress``).
PROGRESS_KEY = "wbsweep/progress"

# W&B run states in wbsweep's words (W&B calls a stopped run "killed").
_RUN_STATES = {
    "pending": RunState.PENDING,
    "preempting": RunState.RUNNING,
    "running": RunState.RUNNING,
    "finished": RunState.FINISHED,
    "failed": RunState.FAILED,
    "crashed": RunState.CRASHED,
    "killed": RunState.STOPPED,
    "preempted": RunState.PREEMPTED,
}
#: The W&B states of a run that has ended for good: a crashed run may be requeued,
#: a preempted one is handed out again.
ENDED_STATES = ("finished", "failed", "killed")
#: Those states in wbsweep's words.
ENDED = frozenset(_RUN_STATES[name] for name in ENDED_STATES)


def sweep_state(value: Any) -> SweepState:
    """A W&B sweep state (any case) as a :class:`SweepState`."""
    text = str(value).upper()
    if text == "PENDING":  # registered, no run handed out yet
        return SweepState.RUNNING
    try:
        return SweepState(text)
    except ValueError:
        # A state wbsweep does not know (a failed launch scheduler): no run will start.
        return SweepState.FINISHED


def run_record(run: Any, sweep: SweepRecord) -> RunRecord:
    """A ``wandb.Api()`` run of ``sweep``; ``params`` keeps only the sweep's parameters."""
    names = set(sweep.config.get("parameters", {}))
    config = {k: v for k, v in dict(run.config).items() if k in names}
    summary = _summary(run)
    state = _RUN_STATES.get(str(run.state).lower(), RunState.CRASHED)
    created = _timestamp(getattr(run, "created_at", None))
    heartbeat = _timestamp(getattr(run, "heartbeat_at", None))
    ran_as = dict(dict(run.config).get(RAN_AS_KEY) or {})
    worker = dict(run.config).get(WORKER_KEY)
    progress = summary.get(PROGRESS_KEY)
    progress = dict(progress) if isinstance(progress, dict) else {}
    started = progress.get("started_at")
    return RunRecord(
        id=str(run.id),
        sweep_id=sweep.id,
        state=state,
        params=config,
        objective=summary_number(summary.get(sweep.metric_name), sweep.goal),
        metrics={
            k: v
            for k, v in summary.items()
            if not k.startswith(("_", "wbsweep/"))
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        },
        worker=str(worker) if worker else None,
        created_at=created,
        # W&B creates a sweep run when an agent takes it.
        claimed_at=created,
        # The trial's first step, as its progress reports say.
        started_at=float(started) if isinstance(started, int | float) else None,
        # The last heartbeat of an ended run is when it ended.
        finished_at=heartbeat if state.terminal else None,
        heartbeat_at=heartbeat,
        requeues=_count(summary.get(REQUEUES_KEY)),
        ran_as=ran_as,
        progress=progress,
    )


def summary_number(value: Any, goal: str) -> float | None:
    """A summary value as a float; ``define_metric`` summaries are ``{"min": v}`` dicts."""
    if isinstance(value, dict):
        value = value.get("min" if goal == "minimize" else "max", value.get("last"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _summary(run: Any) -> dict[str, Any]:
    raw = getattr(run, "summary_metrics", None)
    if isinstance(raw, str):
        raw = json.loads(raw or "{}")
    if not raw:
        raw = dict(getattr(run, "summary", {}) or {})
    return dict(raw)


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()
