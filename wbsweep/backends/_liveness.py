"""Which runs are alive, which crashed, and which crashed runs run again.

Pure functions over :class:`~wbsweep.backends.records.RunRecord` lists, so the
store applies them inside its transactions and tests check them in memory.

A run is *stale* when it is ``running`` but its worker has not sent a
heartbeat for ``timeout`` seconds: the worker is gone (SIGKILL, OOM killer, a
lost node), and the run is ``crashed``. A crashed run's params run again as a
new run that names it in ``retry_of``, until a chain of reruns reaches
``max_retries``. A crashed run that has a rerun does not count toward
``run_cap``: the sweep still ends with its full count of finished runs.

>>> from wbsweep.backends.records import DEFAULT_MAX_RETRIES, RunRecord
>>> a = RunRecord("a", "s", RunState.CRASHED, {"x": 1})
>>> b = RunRecord("b", "s", RunState.FINISHED, {"x": 2})
>>> next_retry([a, b], max_retries=1).id
'a'
>>> a2 = RunRecord("a2", "s", RunState.CRASHED, {"x": 1}, retry_of="a")
>>> next_retry([a, b, a2], max_retries=1) is None, counted([a, b, a2])
(True, 2)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from wbsweep.backends.records import DEFAULT_MAX_RETRIES, RunRecord
from wbsweep.errors import UsageError
from wbsweep.states import RunState

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "HEARTBEAT_TIMEOUT_ENV",
    "counted",
    "heartbeat_every",
    "heartbeat_timeout",
    "is_stale",
    "next_retry",
]

#: Seconds without a heartbeat after which a running run's worker counts as gone.
DEFAULT_HEARTBEAT_TIMEOUT = 60.0
HEARTBEAT_TIMEOUT_ENV = "WBSWEEP_HEARTBEAT_TIMEOUT"


def heartbeat_timeout(environ: Mapping[str, str] | None = None) -> float:
    """``$WBSWEEP_HEARTBEAT_TIMEOUT`` seconds, else 60.

    Raises:
        UsageError: The value is not a positive number.
    """
    text = (os.environ if environ is None else environ).get(HEARTBEAT_TIMEOUT_ENV)
    if not text:
        return DEFAULT_HEARTBEAT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise UsageError(f"{HEARTBEAT_TIMEOUT_ENV} must be a positive number of seconds: {text!r}")
    return value


def heartbeat_every(timeout: float) -> float:
    """How often a live worker beats: often enough that three beats fit in ``timeout``."""
    return min(5.0, timeout / 3)


def is_stale(run: RunRecord, now: float, timeout: float) -> bool:
    """A running run whose last sign of life is older than ``timeout`` seconds."""
    if run.state != RunState.RUNNING:
        return False
    last = run.heartbeat_at or run.claimed_at or run.created_at
    return last is not None and now - last > timeout


def next_retry(runs: Sequence[RunRecord], max_retries: int) -> RunRecord | None:
    """The oldest crashed run to run again: no rerun yet, its chain under ``max_retries``."""
    by_id = {run.id: run for run in runs}
    rerun = {run.retry_of for run in runs if run.retry_of}
    for run in runs:
        crashed = run.state == RunState.CRASHED and run.id not in rerun
        if crashed and _depth(run, by_id) < max_retries:
            return run
    return None


def counted(runs: Sequence[RunRecord]) -> int:
    """How many runs count toward ``run_cap``: all but crashed runs that were rerun."""
    rerun = {run.retry_of for run in runs if run.retry_of}
    return sum(1 for run in runs if run.id not in rerun)


def _depth(run: RunRecord, by_id: Mapping[str, RunRecord]) -> int:
    depth, seen = 0, {run.id}
    while run.retry_of and run.retry_of in by_id and run.retry_of not in seen:
        run = by_id[run.retry_of]
        seen.add(run.id)
        depth += 1
    return depth
