"""``Backend``'s guarantees (``wbsweep/backends/base.py``), checked on every backend."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from wbsweep.backends.base import Backend, ClaimedRun, DriveOptions, RunState, SweepState
from wbsweep.best import best_run
from wbsweep.errors import (
    EXIT_NOT_FOUND,
    SweepNotFoundError,
    SweepStateError,
    UsageError,
    WbsweepError,
)

AddRun = Callable[[str, str, "float | None"], str]
Config = dict[str, Any]


def _one_line(exc: BaseException) -> str:
    """The error as the CLI shows it: a wbsweep error, one line, no traceback text."""
    assert isinstance(exc, WbsweepError), repr(exc)
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def test_create_then_sweep_round_trips_on_any_instance(
    backend: Backend, reopen: Callable[[], Backend], sweep_config: Config
) -> None:
    sweep_id = backend.create(sweep_config, sweep_file=sweep_config["program"])

    for seen_by in (backend, reopen()):
        sweep = seen_by.sweep(sweep_id)
        assert sweep.id == sweep_id
        assert sweep.config == sweep_config
        assert sweep.state is SweepState.RUNNING
        assert sweep.sweep_file == sweep_config["program"]
        assert (sweep.metric_name, sweep.goal, sweep.run_cap) == ("objective", "minimize", None)
        assert seen_by.runs(sweep_id) == []
    assert backend.resolve(sweep_id) == sweep_id


def test_an_unknown_sweep_is_not_found_everywhere(backend: Backend, missing_sweep_id: str) -> None:
    calls = {
        "sweep": backend.sweep,
        "runs": backend.runs,
        "best_candidates": backend.best_candidates,
        "set_state": lambda sweep_id: backend.set_state(sweep_id, SweepState.PAUSED),
    }
    for name, call in calls.items():
        with pytest.raises(SweepNotFoundError) as raised:
            call(missing_sweep_id)
        assert "nosuchid" in _one_line(raised.value), name
        assert raised.value.exit_code == EXIT_NOT_FOUND


def test_pause_resume_stop_and_a_finished_sweep_stays_finished(
    backend: Backend, sweep_config: Config
) -> None:
    sweep_id = backend.create(sweep_config)
    for state in (SweepState.PAUSED, SweepState.RUNNING, SweepState.FINISHED):
        backend.set_state(sweep_id, state)
        assert backend.sweep(sweep_id).state is state

    for state in (SweepState.RUNNING, SweepState.PAUSED, SweepState.CANCELED):
        with pytest.raises(SweepStateError) as raised:
            backend.set_state(sweep_id, state)
        assert "finished" in _one_line(raised.value)
    backend.set_state(sweep_id, SweepState.FINISHED)  # no change: allowed
    assert backend.sweep(sweep_id).state is SweepState.FINISHED


def test_a_canceled_sweep_stays_canceled(backend: Backend, sweep_config: Config) -> None:
    sweep_id = backend.create(sweep_config)
    backend.set_state(sweep_id, SweepState.CANCELED)
    assert backend.sweep(sweep_id).state is SweepState.CANCELED
    with pytest.raises(SweepStateError) as raised:
        backend.set_state(sweep_id, SweepState.RUNNING)
    assert "canceled" in _one_line(raised.value)
    assert backend.sweep(sweep_id).state is SweepState.CANCELED


def test_an_unknown_state_is_a_usage_error(backend: Backend, sweep_config: Config) -> None:
    sweep_id = backend.create(sweep_config)
    with pytest.raises(UsageError) as raised:
        backend.set_state(sweep_id, "BOGUS")  # type: ignore[arg-type]
    assert "BOGUS" in _one_line(raised.value)
    assert backend.sweep(sweep_id).state is SweepState.RUNNING


def test_runs_are_oldest_first_with_only_the_sweep_parameters(
    backend: Backend, add_run: AddRun, reopen: Callable[[], Backend], sweep_config: Config
) -> None:
    sweep_id = backend.create(sweep_config)
    made = [
        add_run(sweep_id, "finished", 0.5),
        add_run(sweep_id, "failed", 0.25),
        add_run(sweep_id, "stopped", None),
        add_run(sweep_id, "running", None),
    ]

    for seen_by in (backend, reopen()):
        runs = seen_by.runs(sweep_id)
        assert [run.id for run in runs] == made
        assert [run.state for run in runs] == [
            RunState.FINISHED,
            RunState.FAILED,
            RunState.STOPPED,
            RunState.RUNNING,
        ]
        assert all(isinstance(run.state, RunState) for run in runs)
        assert all(run.sweep_id == sweep_id for run in runs)
        assert [set(run.params) for run in runs] == [{"a", "b"}] * 4
        assert len({run.params["a"] for run in runs}) == 4  # grid: each point once
        assert [run.objective for run in runs] == [0.5, 0.25, None, None]
        assert [run.finished_at is not None for run in runs] == [True, True, True, False]


def test_a_run_s_label_numbers_it_in_its_sweep_and_names_the_backend(
    backend: Backend, add_run: AddRun, sweep_config: Config
) -> None:
    sweep_id = backend.create({**sweep_config, "name": "labels"})
    made = [add_run(sweep_id, "finished", 0.5), add_run(sweep_id, "running", None)]
    for number, run_id in enumerate(made, start=1):
        label = backend.run_label(sweep_id, run_id)
        assert label.name == f"labels-{number}"
        assert label.tags[0] == backend.name and len(label.tags) == 2 and all(label.tags)
    # Unnamed, a sweep is called by its id, as W&B shows it.
    bare = backend.create(sweep_config)
    run_id = add_run(bare, "running", None)
    assert backend.run_label(bare, run_id).name == f"{bare.rsplit('/', 1)[-1]}-1"
    with pytest.raises(SweepNotFoundError):
        backend.run_label(backend.resolve("nosweep1"), run_id)


def test_best_candidates_are_finished_with_a_finite_objective(
    backend: Backend, add_run: AddRun, sweep_config: Config
) -> None:
    sweep_id = backend.create(sweep_config)
    good = add_run(sweep_id, "finished", 0.5)
    better = add_run(sweep_id, "finished", 0.25)
    add_run(sweep_id, "finished", None)
    add_run(sweep_id, "finished", math.inf)
    add_run(sweep_id, "failed", 0.1)
    add_run(sweep_id, "stopped", 0.0)
    add_run(sweep_id, "running", None)

    candidates = backend.best_candidates(sweep_id)
    assert sorted(run.id for run in candidates) == sorted([good, better])
    assert all(run.state is RunState.FINISHED and run.has_finite_objective for run in candidates)
    assert best_run(backend, sweep_id).run_id == better


def test_where_a_sweep_lives_and_how_a_node_joins_it(
    backend: Backend, sweep_config: Config
) -> None:
    sweep_id = backend.create(sweep_config)
    assert backend.location and "\n" not in backend.location
    argv = backend.worker_argv(sweep_id, "host-w0")
    assert argv and all(isinstance(token, str) for token in argv)
    assert sweep_id in argv
    assert backend.agent_command(sweep_id)[:3] == ["wbsweep", "agent", sweep_id]
    assert backend.resolve(backend.resolve(sweep_id)) == sweep_id
    url = backend.sweep_url(sweep_id)
    assert url is None or url.endswith(sweep_id.rsplit("/", 1)[-1])
    assert backend.worker_stagger >= 0


def test_drive_hands_each_trial_its_run_with_only_the_sweep_parameters(
    backend: Backend, sweep_config: Config
) -> None:
    sweep_id = backend.create(sweep_config)
    seen: list[ClaimedRun] = []
    backend.drive(sweep_id, seen.append, DriveOptions("contract-w0", count=1))

    (claimed,) = seen
    assert claimed.sweep_id == sweep_id
    (run,) = [run for run in backend.runs(sweep_id) if run.id == claimed.run_id]
    assert claimed.params == run.params
    assert set(claimed.params) == {"a", "b"}


def test_drive_goes_on_after_a_failed_trial_until_the_failure_limit(
    backend: Backend, sweep_config: Config
) -> None:
    sweep_id = backend.create(sweep_config)
    calls: list[str] = []

    def failing(claimed: ClaimedRun) -> None:
        calls.append(claimed.run_id)
        raise RuntimeError("the user's training code failed")

    backend.drive(
        sweep_id, failing, DriveOptions("contract-w0", count=5, max_consecutive_failures=2)
    )
    assert len(calls) == 2 and len(set(calls)) == 2


@pytest.mark.parametrize("state", [SweepState.FINISHED, SweepState.CANCELED])
def test_drive_on_an_ended_sweep_runs_nothing_and_returns_at_once(
    backend: Backend, sweep_config: Config, state: SweepState
) -> None:
    # Joining a search whose sweep is over (sweep_id=best.run_summary after a restart).
    sweep_id = backend.create(sweep_config)
    backend.set_state(sweep_id, state)
    seen: list[ClaimedRun] = []
    started = time.monotonic()
    backend.drive(sweep_id, seen.append, DriveOptions("contract-w0"))
    assert seen == []
    # W&B's in-process agent polls 5 s and more before it notices it was told to exit.
    assert time.monotonic() - started < 4


def test_drive_on_an_unknown_sweep_is_not_found(backend: Backend, missing_sweep_id: str) -> None:
    with pytest.raises(SweepNotFoundError) as raised:
        backend.drive(missing_sweep_id, lambda run: None, DriveOptions("w"))
    _one_line(raised.value)
