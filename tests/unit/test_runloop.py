"""The one run loop: claims, records how each trial ended, pauses, stops, gives up.

The trials here are plain functions (the loop injects its runner), the queue is
a real local store on a temp file: what a worker or the plugin sees.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from wbsweep.backends.base import (
    ClaimedRun,
    DriveOptions,
    RunEnd,
    RunRecord,
    RunState,
    SweepState,
)
from wbsweep.backends.local import LocalBackend
from wbsweep.errors import EXIT_FAILED
from wbsweep.runloop import RunLoop, in_process


def grid_sweep(store: LocalBackend, values: list[int]) -> str:
    return store.create(
        {
            "method": "grid",
            "metric": {"name": "objective", "goal": "minimize"},
            "parameters": {"x": {"values": values}},
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "store.db")


def test_every_run_ends_recorded_and_the_sweep_finishes(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1, 2, 3])
    ends = {1: RunEnd(0), 2: RunEnd(3, "ValueError: bad"), 3: RunEnd(None)}

    def runner(run: RunRecord) -> RunEnd:
        return ends[run.params["x"]]

    outcomes = RunLoop(store, sweep_id, runner, DriveOptions("w")).run()
    ended = [RunState.FINISHED, RunState.FAILED, RunState.CRASHED, RunState.CRASHED]
    assert [o.state for o in outcomes] == ended  # the crashed run's params ran once more
    runs = store.runs(sweep_id)
    assert [r.state for r in runs] == ended
    assert [r.reason for r in runs] == [None, "ValueError: bad", None, None]
    assert runs[3].params == runs[2].params and runs[3].retry_of == runs[2].id
    assert store.sweep(sweep_id).state == SweepState.FINISHED


def test_no_retries_when_max_retries_is_zero(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1])
    options = DriveOptions("w", max_retries=0)
    outcomes = RunLoop(store, sweep_id, lambda run: RunEnd(None), options).run()
    assert [o.state for o in outcomes] == [RunState.CRASHED]
    assert store.sweep(sweep_id).state == SweepState.FINISHED


def test_count_caps_this_loop_only(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1, 2, 3])
    assert (
        len(RunLoop(store, sweep_id, lambda run: RunEnd(0), DriveOptions("w", count=2)).run()) == 2
    )
    assert store.sweep(sweep_id).state == SweepState.RUNNING  # one grid point is left
    assert len(RunLoop(store, sweep_id, lambda run: RunEnd(0), DriveOptions("w2")).run()) == 1


def test_consecutive_failure_limit_stops_the_loop(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, list(range(10)))
    lines: list[str] = []
    options = DriveOptions("w", max_consecutive_failures=3, log=lines.append)
    outcomes = RunLoop(store, sweep_id, lambda run: RunEnd(1), options).run()
    assert len(outcomes) == 3 and all(o.state == RunState.FAILED for o in outcomes)
    assert any("3 trials failed in a row" in line for line in lines)


def test_a_success_resets_the_failure_count(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, list(range(6)))

    def runner(run: RunRecord) -> RunEnd:
        return RunEnd(0 if run.params["x"] % 2 else 1)  # fail, succeed, fail, ...

    outcomes = RunLoop(store, sweep_id, runner, DriveOptions("w", max_consecutive_failures=2)).run()
    assert len(outcomes) == 6


def test_stop_ends_after_the_current_trial_which_is_recorded_stopped(
    store: LocalBackend,
) -> None:
    sweep_id = grid_sweep(store, [1, 2, 3])
    loop: RunLoop

    def runner(run: RunRecord) -> RunEnd:
        loop.stop()  # what the worker's SIGTERM handler does
        return RunEnd(143)

    loop = RunLoop(store, sweep_id, runner, DriveOptions("w"))
    outcomes = loop.run()
    assert [o.state for o in outcomes] == [RunState.STOPPED]
    assert [r.state for r in store.runs(sweep_id)] == [RunState.STOPPED]


@pytest.mark.parametrize(
    ("told", "state"), [("stop", RunState.STOPPED), ("preempt", RunState.PREEMPTED)]
)
def test_a_trial_that_ends_on_the_worker_s_own_sigterm_is_what_the_worker_was_told(
    store: LocalBackend, told: str, state: RunState
) -> None:
    """Ctrl-C: stopped; the node's SIGTERM: preempted, whatever the trial says.

    Either way the worker SIGTERMs its trial, whose ranks save a checkpoint and
    say ``preempted`` (143): what a warm group or a cold launch reports when the
    worker's SIGTERM reaches the ranks before the launcher passes Ctrl-C on.
    """
    sweep_id = grid_sweep(store, [1, 2])
    loop: RunLoop

    def runner(run: RunRecord) -> RunEnd:
        getattr(loop, told)()  # the worker's signal handler
        return RunEnd(143, "terminated", preempted=True, elsewhere=True)

    loop = RunLoop(store, sweep_id, runner, DriveOptions("w"))
    assert [o.state for o in loop.run()] == [state]
    assert [r.state for r in store.runs(sweep_id)] == [state]


def test_a_run_preempted_elsewhere_is_preempted_and_the_loop_goes_on(store: LocalBackend) -> None:
    """Another node of a multi-node trial went away: this worker was told nothing."""
    sweep_id = grid_sweep(store, [1])
    ends = [RunEnd(143, "terminated", preempted=True, elsewhere=True), RunEnd(0)]
    outcomes = RunLoop(store, sweep_id, lambda run: ends.pop(0), DriveOptions("w")).run()
    assert [o.state for o in outcomes] == [RunState.PREEMPTED, RunState.FINISHED]


def test_an_interrupted_runner_still_leaves_no_run_running(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1, 2])

    def runner(run: RunRecord) -> RunEnd:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        RunLoop(store, sweep_id, runner, DriveOptions("w")).run()
    (run,) = store.runs(sweep_id)
    assert run.state == RunState.STOPPED and run.exit_code == EXIT_FAILED


def test_paused_sweep_waits_then_goes_on_when_resumed(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1])
    store.set_state(sweep_id, SweepState.PAUSED)
    resume = threading.Timer(0.3, store.set_state, (sweep_id, SweepState.RUNNING))
    resume.start()
    started = time.monotonic()
    outcomes = RunLoop(
        store, sweep_id, lambda run: RunEnd(0), DriveOptions("w"), paused_poll=0.05
    ).run()
    assert time.monotonic() - started >= 0.3
    assert [o.state for o in outcomes] == [RunState.FINISHED]


def test_in_process_trials_get_the_queue_and_offline_runs(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1, 2])
    seen: list[ClaimedRun] = []

    def trial(claimed: ClaimedRun) -> None:
        seen.append(claimed)
        if claimed.params["x"] == 2:
            raise ValueError("no 2 today")

    outcomes = RunLoop(store, sweep_id, in_process(store, trial), DriveOptions("w")).run()
    assert [o.state for o in outcomes] == [RunState.FINISHED, RunState.FAILED]
    assert store.runs(sweep_id)[1].reason == "ValueError: no 2 today"
    first: Any = seen[0]
    assert first.reporter is store and first.wandb_mode == "offline"
    assert first.wandb_group == f"sweep-{sweep_id}" and first.sweep_id == sweep_id


def test_backend_drive_is_the_same_loop(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1, 2, 3])
    ran: list[int] = []
    store.drive(
        sweep_id, lambda claimed: ran.append(claimed.params["x"]), DriveOptions("w", count=2)
    )
    assert sorted(ran) == [1, 2]
    assert [r.worker for r in store.runs(sweep_id)] == ["w", "w"]


def test_a_run_claimed_ahead_runs_next_and_one_left_over_is_handed_back(
    store: LocalBackend,
) -> None:
    sweep_id = grid_sweep(store, [1, 2, 3])
    seen: list[tuple[int, str]] = []

    def runner(run: RunRecord) -> RunEnd:
        seen.append((run.params["x"], run.id))
        loop.claim_ahead()  # as a warm worker does when the final evaluation starts
        if run.params["x"] == 2:
            loop.stop()  # Ctrl-C while the next run was already claimed
        return RunEnd(0)

    loop = RunLoop(store, sweep_id, runner, DriveOptions("w"))
    loop.run()
    runs = store.runs(sweep_id)
    assert [x for x, _ in seen] == [1, 2]
    assert [(r.params["x"], r.state) for r in runs] == [
        (1, RunState.FINISHED), (2, RunState.STOPPED), (3, RunState.PREEMPTED)
    ]  # fmt: skip
    # The run handed back is the next one any worker takes, under its own id.
    again = RunLoop(store, sweep_id, lambda run: RunEnd(0), DriveOptions("w2")).run()
    assert [o.run_id for o in again] == [runs[2].id]
    assert store.sweep(sweep_id).state == SweepState.FINISHED


def test_no_run_is_claimed_ahead_past_the_count(store: LocalBackend) -> None:
    sweep_id = grid_sweep(store, [1, 2, 3])

    def runner(run: RunRecord) -> RunEnd:
        loop.claim_ahead()
        return RunEnd(0)

    loop = RunLoop(store, sweep_id, runner, DriveOptions("w", count=2))
    assert len(loop.run()) == 2
    assert [r.state for r in store.runs(sweep_id)] == [RunState.FINISHED] * 2
