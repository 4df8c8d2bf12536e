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
* beats the run's heartbeat while its trial runs, so a worker that dies is
  noticed (its run is ``crashed`` and its params run again);
* records each run's end with the runner's one-line reason;
* lets the runner claim the next run while its trial finishes
  (:meth:`RunLoop.claim_ahead`), so the next trial starts with no claim between;
* marks the sweep finished once no run can start and none is running.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from wbsweep.backends.base import (
    ClaimedRun,
    DriveOptions,
    InProcessTrial,
    RunEnd,
    RunQueue,
    RunRecord,
    RunState,
    SweepState,
)
from wbsweep.errors import EXIT_FAILED, EXIT_TERMINATED, TrialStopped, WbsweepError
from wbsweep.procs import Terminated

__all__ = ["RunLoop", "TrialOutcome", "TrialRunner", "in_process"]

PAUSED_POLL = 2.0


#: Runs one claimed run to its end and says how it ended (the loop decides ``stopped``).
TrialRunner = Callable[[RunRecord], RunEnd]


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
        #: Whether the loop ended because ``max_consecutive_failures`` failed in a row.
        self.gave_up = False
        self._stopping = False
        self._preempting = False
        #: A run claimed while the current trial finishes (see :meth:`claim_ahead`).
        self._ahead: RunRecord | None = None
        self._ahead_beat: _Heartbeat | None = None

    @property
    def stopping(self) -> bool:
        """Whether the loop was told to stop: the current trial should end now."""
        return self._stopping

    def stop(self) -> None:
        """End the loop after the current trial (safe to call from a signal handler)."""
        self._stopping = True

    def preempt(self) -> None:
        """End the loop because the node is going away: the current run is handed out again.

        Its trial gets SIGTERM as for :meth:`stop`, saves a checkpoint and leaves;
        the run is ``preempted`` and resumes on whichever worker claims it next.
        """
        self._preempting = True
        self._stopping = True

    def claim_ahead(self) -> None:
        """Claim the next run now, while the current trial finishes (its final evaluation).

        The runner calls it (a warm worker, when rank 0 starts the final
        evaluation), so the next trial's params are waiting when this one ends
        and no time passes between them on the claim. The claimed run beats its
        heartbeat from now on; a loop that ends before it runs hands it back
        (``preempted``: the next claim of the sweep takes it first).
        """
        count = self.options.count
        if self._ahead is not None or self._stopping:
            return
        if count is not None and len(self.outcomes) + 1 >= count:
            return  # the current trial is this loop's last
        try:
            run = self._claim()
        except WbsweepError:
            return  # the claim after the trial says why, if it still cannot
        if run is not None:
            self._ahead, self._ahead_beat = run, _Heartbeat(self.queue, run.id)

    def _claim(self) -> RunRecord | None:
        return self.queue.claim_next(
            self.sweep_id, self.options.worker, max_retries=self.options.max_retries
        )

    def _take_ahead(self) -> RunRecord | None:
        run, self._ahead = self._ahead, None
        if self._ahead_beat is not None:
            self._ahead_beat.stop()
            self._ahead_beat = None
        return run

    def run(self) -> list[TrialOutcome]:
        """Claim and run trials until none is left, ``count`` ran, or too many failed."""
        try:
            return self._run()
        finally:
            ahead = self._take_ahead()
            if ahead is not None:  # claimed for a trial this loop will not run
                self.queue.finish_run(
                    ahead.id, RunEnd(EXIT_TERMINATED, "handed back unstarted", preempted=True)
                )

    def _run(self) -> list[TrialOutcome]:
        count, limit = self.options.count, self.options.max_consecutive_failures
        failures = 0
        while not self._stopping and (count is None or len(self.outcomes) < count):
            if limit is not None and failures >= limit:
                self.gave_up = True
                last = self.queue.run(self.outcomes[-1].run_id).reason or "see the trial's log"
                self.log(
                    f"[{self.options.worker}] {failures} trials failed in a row; this worker "
                    f"stops. Last: {last}"
                )
                break
            run = self._take_ahead() or self._claim()
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
        self.queue.maybe_finish_sweep(self.sweep_id, max_retries=self.options.max_retries)
        return self.outcomes

    def _as_told(self, end: RunEnd) -> RunEnd:
        """``end`` with what the loop was told: preempted (run it again) or stopped.

        Told to stop (Ctrl-C, a cancel), the worker SIGTERMs its trial, which then
        ends as a preempted trial does (a checkpoint saved): that run is stopped,
        whichever signal reached the ranks first.
        """
        preempted = self._preempting or (end.preempted and not self._stopping)
        stopped = not preempted and (end.stopped or self._stopping)
        return dataclasses.replace(end, preempted=preempted, stopped=stopped)

    def _paused(self) -> bool:
        return self.queue.sweep_state(self.sweep_id) == SweepState.PAUSED

    def _run_one(self, run: RunRecord) -> TrialOutcome:
        started = time.monotonic()
        # Unless the runner returns, Ctrl-C or SIGTERM ended it: stopped (or preempted).
        end = self._as_told(RunEnd(EXIT_FAILED, stopped=True))
        beat = _Heartbeat(self.queue, run.id)
        try:
            end = self.runner(run)
            if end.preempted and not end.elsewhere:  # going away: no other run starts here
                self.preempt()
            end = self._as_told(end)
        except Exception as exc:
            end = RunEnd(EXIT_FAILED, _reason(exc))  # the runner itself broke: the run failed
            raise
        finally:
            beat.stop()
            # Recorded however the runner ended: no run stays `running`.
            state = self.queue.finish_run(run.id, end)
        return TrialOutcome(run.id, state, end.exit_code, time.monotonic() - started)


class _Heartbeat:
    """Tells the queue every ``queue.heartbeat_every`` seconds that this run's worker lives.

    A thread, so it beats whatever the trial does: a process group the worker
    waits on, or training in this very process.
    """

    def __init__(self, queue: RunQueue, run_id: str) -> None:
        self._queue = queue
        self._run_id = run_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(self._queue.heartbeat_every):
            try:
                self._queue.heartbeat(self._run_id)
            except WbsweepError:
                continue  # a busy or briefly unwritable store: the next beat tries again

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def in_process(queue: RunQueue, trial: InProcessTrial) -> TrialRunner:
    """A runner that calls ``trial`` in this process: exit 0 when it returns, 1 when it raises.

    A run of a queue-owned sweep is one no W&B server knows, so its W&B run is
    offline unless ``WANDB_MODE`` says otherwise, grouped by sweep.
    """

    def run_here(run: RunRecord) -> RunEnd:
        claimed = ClaimedRun(
            run_id=run.id,
            sweep_id=run.sweep_id,
            params=dict(run.params),
            reporter=queue,
            wandb_mode="offline",
            wandb_group=f"sweep-{run.sweep_id}",
            should_stop=functools.partial(queue.should_stop, run.id),
        )
        try:
            trial(claimed)
        except TrialStopped:
            return RunEnd(0, stopped=True)
        except Terminated:  # a scheduler's SIGTERM: the trial saved a checkpoint to resume from
            return RunEnd(EXIT_TERMINATED, preempted=True)
        except Exception as exc:  # noqa: BLE001 - the trial logged it; the run failed for it
            return RunEnd(EXIT_FAILED, _reason(exc))
        return RunEnd(0)

    return run_here
