"""One run loop for every worker kind: claim, run one trial, record how it ended.

The loop is what ``wandb agent`` is to a W&B sweep, for a sweep whose runs
wbsweep hands out itself (a :class:`~wbsweep.backends.base.RunQueue`). Who
runs the trial is injected: the CLI worker starts the sweep's command as a
process group (:mod:`wbsweep.worker`), the ``hyperparameter_search`` plugin
trains in its own process (:func:`in_process`). The loop owns the rest:

* waits while the sweep is paused, and ends when nothing is left for it;
* ends after ``count`` trials, or after ``max_consecutive_failures`` failed in a row;
* :meth:`RunLoop.stop` (a signal handler may call it) ends the loop after the
  current trial, whose runner sees :attr:`RunLoop.stopping` and records it stopped;
* marks the sweep finished once no run can start and none is running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from wbsweep.backends.base import (
    ClaimedRun,
    DriveOptions,
    InProcessTrial,
    RunQueue,
    RunRecord,
    RunState,
    SweepState,
)
from wbsweep.errors import EXIT_FAILED

__all__ = ["RunLoop", "TrialOutcome", "TrialRunner", "in_process"]

PAUSED_POLL = 2.0

#: Runs one claimed run to its end; returns its exit code (``None``: killed by a signal).
TrialRunner = Callable[[RunRecord], "int | None"]


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, as the loop recorded it."""

    run_id: str
    state: RunState
    exit_code: int | None
    seconds: float


class RunLoop:
    """Claims and runs trials of one sweep, one at a time, until none is left."""

    def __init__(
        self,
        queue: RunQueue,
        sweep_id: str,
        runner: TrialRunner,
        options: DriveOptions,
        *,
        on_end: Callable[[RunRecord, TrialOutcome], None] | None = None,
        paused_poll: float = PAUSED_POLL,
    ) -> None:
        self.queue = queue
        self.sweep_id = sweep_id
        self.runner = runner
        self.options = options
        self.log = options.log or (lambda line: None)
        self.on_end = on_end
        self.paused_poll = paused_poll
        self.outcomes: list[TrialOutcome] = []
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """Whether the loop was told to stop: the current trial should end now."""
        return self._stopping

    def stop(self) -> None:
        """End the loop after the current trial (safe to call from a signal handler)."""
        self._stopping = True

    def run(self) -> list[TrialOutcome]:
        """Claim and run trials until none is left, ``count`` ran, or too many failed."""
        count, limit = self.options.count, self.options.max_consecutive_failures
        failures = 0
        while not self._stopping and (count is None or len(self.outcomes) < count):
            if limit is not None and failures >= limit:
                self.log(
                    f"[{self.options.worker}] {failures} trials failed in a row; this worker stops"
                )
                break
            run = self.queue.claim_next(self.sweep_id, self.options.worker)
            if run is None:
                if self._paused():
                    time.sleep(self.paused_poll)
                    continue
                break
            outcome = self._run_one(run)
            self.outcomes.append(outcome)
            if self.on_end is not None:
                self.on_end(run, outcome)
            failed = outcome.state in (RunState.FAILED, RunState.CRASHED)
            failures = failures + 1 if failed else 0
        self.queue.maybe_finish_sweep(self.sweep_id)
        return self.outcomes

    def _paused(self) -> bool:
        return self.queue.sweep_state(self.sweep_id) == SweepState.PAUSED

    def _run_one(self, run: RunRecord) -> TrialOutcome:
        started = time.monotonic()
        exit_code: int | None = EXIT_FAILED
        stopped = True  # unless the runner returns: Ctrl-C or SIGTERM ended it
        try:
            exit_code = self.runner(run)
            stopped = self._stopping
        except Exception:
            stopped = False  # the runner itself broke: the run failed
            raise
        finally:
            # Recorded however the runner ended: no run stays `running`.
            state = self.queue.finish_run(run.id, exit_code=exit_code, stopped=stopped)
        return TrialOutcome(run.id, state, exit_code, time.monotonic() - started)


def in_process(queue: RunQueue, trial: InProcessTrial) -> TrialRunner:
    """A runner that calls ``trial`` in this process: 0 when it returns, 1 when it raises.

    A run of a queue-owned sweep is one no W&B server knows, so its W&B run is
    offline unless ``WANDB_MODE`` says otherwise, grouped by sweep.
    """

    def run_here(run: RunRecord) -> int:
        claimed = ClaimedRun(
            run_id=run.id,
            sweep_id=run.sweep_id,
            params=dict(run.params),
            reporter=queue,
            wandb_mode="offline",
            wandb_group=f"sweep-{run.sweep_id}",
        )
        try:
            trial(claimed)
        except Exception:  # noqa: BLE001 - the trial logged why; the run is failed
            return EXIT_FAILED
        return 0

    return run_here
