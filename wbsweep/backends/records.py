"""The values passed between a backend and its callers: runs, sweeps, claims, limits.

Frozen dataclasses of plain data; :mod:`wbsweep.backends.base` re-exports them
with the contract that produces them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from wbsweep.errors import UsageError
from wbsweep.states import RunState, SweepState

#: How many times a crashed run's params run again, as a chain of reruns.
DEFAULT_MAX_RETRIES = 1
#: As ``wandb agent`` (``WANDB_AGENT_MAX_INITIAL_FAILURES``): several failures in a
#: row usually mean a bug in the sweep file, not bad luck.
DEFAULT_MAX_FAILURES = 5
#: How ``wbsweep agent`` passes ``--max-consecutive-failures`` and ``--max-retries`` on.
MAX_FAILURES_ENV = "WBSWEEP_MAX_CONSECUTIVE_FAILURES"
MAX_RETRIES_ENV = "WBSWEEP_MAX_RETRIES"
#: How ``wbsweep agent`` passes ``--count`` on to each local worker.
COUNT_ENV = "WBSWEEP_WORKER_COUNT"
#: The ``RunRecord.ran_as`` key for the sweep params the run's trial did not use.
UNUSED_KEY = "unused_params"

__all__ = [
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_MAX_RETRIES",
    "COUNT_ENV",
    "MAX_FAILURES_ENV",
    "MAX_RETRIES_ENV",
    "ClaimedRun",
    "DriveOptions",
    "InProcessTrial",
    "Reporter",
    "RunEnd",
    "RunLabel",
    "RunRecord",
    "SweepRecord",
    "UNUSED_KEY",
]


@dataclass(frozen=True)
class RunRecord:
    """One trial of a sweep as a backend recorded it.

    Timestamps are seconds since the epoch (UTC); ``None`` where the event has
    not happened. ``objective`` is the sweep metric's value, ``metrics`` the
    trial's final evaluation metrics.
    """

    id: str
    sweep_id: str
    state: RunState
    params: dict[str, Any]
    objective: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    worker: str | None = None
    created_at: float | None = None
    claimed_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    #: The crashed run whose params this run runs again.
    retry_of: str | None = None
    #: Why the run failed or crashed, in one line (the trial's own error line).
    reason: str | None = None
    #: How many times W&B handed this same run out again after it crashed.
    requeues: int = 0
    #: How the trial ran: ranks, mixed precision, nodes, and whether an agent's flags
    #: overrode the sweep's recorded shape (see :func:`wbsweep.shape.ran_as`); and
    #: under ``UNUSED_KEY``, the params its branch of ``hp_space`` did not read.
    ran_as: dict[str, Any] = field(default_factory=dict)
    #: Where the trial is, as its rank 0 last said (every few seconds while it trains):
    #: ``step``, ``total`` (the Trainer's ``max_steps``), ``at`` (when it said so),
    #: ``started_at`` (its first step), and ``eval``/``eval_step``, the sweep metric at
    #: the latest evaluation. Empty until the first step.
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def has_finite_objective(self) -> bool:
        return self.objective is not None and math.isfinite(self.objective)

    @property
    def unused_params(self) -> frozenset[str]:
        """The sweep params this run was given but did not use (another branch's)."""
        return frozenset(self.ran_as.get(UNUSED_KEY) or ())


@dataclass(frozen=True)
class RunEnd:
    """How a run's trial ended, as its worker saw it.

    Attributes:
        exit_code: The trial's exit code; ``None`` when a signal killed it.
        reason: Why it failed, in one line (the trial's own error line).
        stopped: It was stopped on purpose (cancel, Ctrl-C, early termination).
        preempted: Its node is going away (a scheduler's SIGTERM): it runs again later.
        elsewhere: Preempted, but not here: another node of a multi-node trial got the
            SIGTERM, and this worker goes on (the run resumes when every node is back).
    """

    exit_code: int | None
    reason: str | None = None
    stopped: bool = False
    preempted: bool = False
    elsewhere: bool = False


@dataclass(frozen=True)
class SweepRecord:
    """A sweep: its id, the whole W&B sweep config, its state and sweep file."""

    id: str
    config: dict[str, Any]
    state: SweepState
    sweep_file: str | None = None
    created_at: float | None = None

    @property
    def metric_name(self) -> str:
        return str(self.config.get("metric", {}).get("name", "objective"))

    @property
    def goal(self) -> str:
        return str(self.config.get("metric", {}).get("goal", "minimize"))

    @property
    def run_cap(self) -> int | None:
        cap = self.config.get("run_cap")
        return int(cap) if cap is not None else None

    @property
    def name(self) -> str:
        """The sweep's display name: ``name`` in its config, else its bare id (as W&B shows it)."""
        return str(self.config.get("name") or self.id.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class RunLabel:
    """How a trial's W&B run reads on the dashboard.

    Attributes:
        name: ``<sweep name>-<n>``, ``n`` the run's number in its sweep (from 1).
        tags: The backend (``local`` or ``wandb``) and the worker that ran it.
        group: The run group, where the sweep itself does not group its runs on W&B
            (a local sweep's runs are grouped under the sweep's name).
    """

    name: str
    tags: tuple[str, ...] = ()
    group: str | None = None


class Reporter(Protocol):
    """Where rank 0 of a trial reports besides W&B: the sweep's own record.

    Every method may be called from the trial's process only; each call is one
    short write and raises ``StoreError`` when the record cannot be written.
    """

    def record_started(self, run_id: str, ran_as: dict[str, Any] | None = None) -> None:
        """The trial took its first training step (kept on a second call), and how it runs."""

    def record_history(self, run_id: str, step: int, metrics: dict[str, Any]) -> None:
        """The metrics of one evaluation during training, at global ``step``."""

    def record_result(self, run_id: str, objective: float, metrics: dict[str, Any]) -> None:
        """The trial's objective and final evaluation metrics."""

    def record_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        """Where the trial is now (``RunRecord.progress``); the latest call's is kept."""


@dataclass(frozen=True)
class ClaimedRun:
    """A run handed to an in-process trial, with what its W&B run should use.

    ``reporter`` is ``None`` where W&B itself records the run. ``wandb_mode``
    is the mode the trial's W&B run takes when ``WANDB_MODE`` does not say
    (``offline`` for local sweeps, so ``wbsweep sync`` can upload them later);
    ``wandb_group`` groups a local sweep's runs on the dashboard.
    """

    run_id: str
    sweep_id: str
    params: dict[str, Any]
    reporter: Reporter | None = None
    wandb_mode: str | None = None
    wandb_group: str | None = None
    #: Whether the sweep stops this run now (hyperband); ``None`` where W&B's agent decides.
    should_stop: Callable[[], bool] | None = None


#: One trial run in this process. Returns when it succeeded; raises when it failed.
InProcessTrial = Callable[[ClaimedRun], None]


@dataclass(frozen=True)
class DriveOptions:
    """Who runs a sweep's trials, and for how long: :meth:`Backend.drive` and the run loop.

    Attributes:
        worker: This worker's name, recorded with each run it takes.
        count: The most trials it runs [default: until the sweep has none left].
        max_consecutive_failures: It stops after this many failed in a row.
        log: Where it says what it does (one line at a time).
        max_retries: How many times a crashed run's params run again.
    """

    worker: str
    count: int | None = None
    max_consecutive_failures: int | None = None
    log: Callable[[str], None] | None = None
    max_retries: int = DEFAULT_MAX_RETRIES

    def env(self) -> dict[str, str]:
        """The limits as environment variables, for a worker process to read back."""
        env = {MAX_RETRIES_ENV: str(self.max_retries)}
        if self.max_consecutive_failures is not None:
            env[MAX_FAILURES_ENV] = str(self.max_consecutive_failures)
        if self.count is not None:
            env[COUNT_ENV] = str(self.count)
        return env

    @classmethod
    def from_env(
        cls, worker: str, environ: Mapping[str, str], log: Callable[[str], None] | None = None
    ) -> DriveOptions:
        """A worker process's options: its limits from ``environ`` (see :meth:`env`).

        Raises:
            UsageError: A limit is set to something other than a whole number in range.
        """
        count = _count(environ, COUNT_ENV, 0, 1) if environ.get(COUNT_ENV) else None
        return cls(
            worker,
            count,
            max_consecutive_failures=_count(environ, MAX_FAILURES_ENV, DEFAULT_MAX_FAILURES, 1),
            log=log,
            max_retries=_count(environ, MAX_RETRIES_ENV, DEFAULT_MAX_RETRIES, 0),
        )


def _count(environ: Mapping[str, str], name: str, default: int, low: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < low:
        raise UsageError(f"{name} must be a whole number of at least {low}, got {text!r}")
    return int(text)
