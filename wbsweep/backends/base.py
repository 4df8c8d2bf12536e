"""The backend contract: where a sweep lives and who decides its next run.

A backend is small on purpose. It creates a sweep from a finished sweep config,
lists the sweep's runs, and changes the sweep's state. Everything else (best
run, status tables) is written once on top of :meth:`Backend.runs`.

Guarantees every backend gives:

* ``create`` either registers the whole sweep or nothing.
* ``runs`` returns every run of the sweep made by any worker on any machine,
  oldest first; a run's ``params`` hold only the sweep's own parameters.
* A finished run never changes again.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any

# Run states a user sees, in W&B's words where W&B has one.
PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CRASHED = "crashed"
STOPPED = "stopped"
RUN_STATES = (PENDING, RUNNING, FINISHED, FAILED, CRASHED, STOPPED)
TERMINAL_STATES = (FINISHED, FAILED, CRASHED, STOPPED)

# Sweep states, as W&B names them.
SWEEP_RUNNING = "RUNNING"
SWEEP_PAUSED = "PAUSED"
SWEEP_FINISHED = "FINISHED"
SWEEP_CANCELED = "CANCELED"


@dataclass(frozen=True)
class RunRecord:
    """One trial of a sweep as a backend recorded it.

    Timestamps are seconds since the epoch (UTC); ``None`` where the event has
    not happened. ``objective`` is the sweep metric's value, ``metrics`` the
    trial's final evaluation metrics.
    """

    id: str
    sweep_id: str
    state: str
    params: dict[str, Any]
    objective: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    worker: str | None = None
    created_at: float | None = None
    claimed_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def has_finite_objective(self) -> bool:
        return self.objective is not None and math.isfinite(self.objective)


@dataclass(frozen=True)
class SweepRecord:
    """A sweep: its id, the whole W&B sweep config, its state and sweep file."""

    id: str
    config: dict[str, Any]
    state: str
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


class Backend(abc.ABC):
    """Where sweeps are registered and their runs recorded."""

    name: str

    @abc.abstractmethod
    def create(self, config: dict[str, Any], *, sweep_file: str | None = None) -> str:
        """Register a sweep from a complete, validated sweep config; return its id."""

    @abc.abstractmethod
    def sweep(self, sweep_id: str) -> SweepRecord:
        """The sweep; raises ``SweepNotFoundError`` when there is none."""

    @abc.abstractmethod
    def runs(self, sweep_id: str) -> list[RunRecord]:
        """Every run of the sweep, oldest first."""

    @abc.abstractmethod
    def set_state(self, sweep_id: str, state: str) -> None:
        """Pause, resume, stop (finish) or cancel a sweep."""
