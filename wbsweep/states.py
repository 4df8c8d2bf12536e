"""Run and sweep states: ``str`` enums, so JSON, the store and W&B keep their plain values.

>>> RunState.STOPPED == "stopped", json.dumps(RunState.FINISHED), f"{SweepState.PAUSED}"
(True, '"finished"', 'PAUSED')
>>> RunState("crashed").terminal
True
"""

from __future__ import annotations

import enum
import json  # noqa: F401 - used by the doctest above

__all__ = ["RunState", "SweepState"]


class _StrEnum(str, enum.Enum):
    """Formats and prints as its value, on every Python the project supports."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class RunState(_StrEnum):
    """A run's state as a user sees it, in W&B's words where W&B has one."""

    PENDING = "pending"
    RUNNING = "running"
    #: Its trial saved a checkpoint and left when the node was preempted; it runs again
    #: (resuming from that checkpoint, under the same run id) before any new run.
    PREEMPTED = "preempted"
    FINISHED = "finished"
    FAILED = "failed"
    CRASHED = "crashed"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        """A run in a terminal state never changes again."""
        return self not in (RunState.PENDING, RunState.RUNNING, RunState.PREEMPTED)


class SweepState(_StrEnum):
    """A sweep's state, as W&B names it."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    FINISHED = "FINISHED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        """A finished or canceled sweep hands out no run and cannot change again."""
        return self in (SweepState.FINISHED, SweepState.CANCELED)
