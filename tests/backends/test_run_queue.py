"""``RunQueue``'s guarantees, checked on every backend whose runs wbsweep hands out."""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wbsweep.backends.base import Backend, RunEnd, RunQueue, RunState, SweepState
from wbsweep.errors import StoreError, SweepNotFoundError

GRID: dict[str, Any] = {
    "method": "grid",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y"]}},
}


def _queue(backend: Backend) -> RunQueue:
    queue = backend.queue
    assert queue is not None
    return queue


def _claim(queue: RunQueue, sweep_id: str, worker: str = "w0") -> str:
    run = queue.claim_next(sweep_id, worker)
    assert run is not None
    return run.id


def test_grid_hands_out_every_point_once_then_the_sweep_finishes(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    seen = []
    while (run := queue.claim_next(sweep_id, "w0")) is not None:
        assert run.state is RunState.RUNNING and run.worker == "w0"
        assert run.claimed_at is not None and run.heartbeat_at is not None
        seen.append((run.params["a"], run.params["b"]))
        assert not queue.maybe_finish_sweep(sweep_id)  # a run is still running
        queue.record_result(run.id, run.params["a"], {"eval_loss": 0.5})
        assert queue.finish_run(run.id, RunEnd(0)) is RunState.FINISHED
    assert sorted(seen) == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]
    assert queue.maybe_finish_sweep(sweep_id)
    assert queue.sweep_state(sweep_id) is SweepState.FINISHED
    assert queue_backend.sweep(sweep_id).state is SweepState.FINISHED


def test_run_cap_is_exact_and_only_a_running_sweep_hands_out_runs(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create({**GRID, "method": "random", "run_cap": 2})
    queue_backend.set_state(sweep_id, SweepState.PAUSED)
    assert queue.claim_next(sweep_id, "w") is None
    assert queue.sweep_state(sweep_id) is SweepState.PAUSED
    assert not queue.maybe_finish_sweep(sweep_id)  # paused is not over
    queue_backend.set_state(sweep_id, SweepState.RUNNING)
    first, second = _claim(queue, sweep_id), _claim(queue, sweep_id)
    assert queue.claim_next(sweep_id, "w") is None
    assert [run.id for run in queue_backend.runs(sweep_id)] == [first, second]

    queue.finish_run(first, RunEnd(0))
    assert not queue.maybe_finish_sweep(sweep_id)  # the second still runs
    queue.finish_run(second, RunEnd(1))
    assert queue.maybe_finish_sweep(sweep_id)
    assert queue.claim_next(sweep_id, "w") is None


def test_a_canceled_sweep_hands_out_nothing_and_is_over(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    queue_backend.set_state(sweep_id, SweepState.CANCELED)
    assert queue.claim_next(sweep_id, "w") is None
    assert queue.maybe_finish_sweep(sweep_id)
    assert queue.sweep_state(sweep_id) is SweepState.CANCELED


def test_an_unknown_sweep_is_not_found(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    for call in (
        lambda: queue.claim_next("nosuchid", "w"),
        lambda: queue.sweep_state("nosuchid"),
        lambda: queue.maybe_finish_sweep("nosuchid"),
    ):
        with pytest.raises(SweepNotFoundError, match="nosuchid"):
            call()


@pytest.mark.parametrize(
    ("exit_code", "stopped", "state"),
    [
        (0, False, RunState.FINISHED),
        (1, False, RunState.FAILED),
        (2, False, RunState.FAILED),
        (None, False, RunState.CRASHED),
        (-9, False, RunState.CRASHED),
        (137, False, RunState.CRASHED),
        (143, True, RunState.STOPPED),
        (0, True, RunState.STOPPED),
    ],
)
def test_finish_run_states_and_the_first_outcome_stays(
    queue_backend: Backend, exit_code: int | None, stopped: bool, state: RunState
) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    run_id = _claim(queue, sweep_id)
    assert queue.finish_run(run_id, RunEnd(exit_code, stopped=stopped)) is state
    (recorded,) = queue_backend.runs(sweep_id)
    assert (recorded.state, recorded.exit_code) == (state, exit_code)
    assert recorded.finished_at is not None
    # A run in a terminal state never changes again.
    assert queue.finish_run(run_id, RunEnd(0)) is state
    assert queue.finish_run(run_id, RunEnd(None, stopped=True)) is state
    assert queue_backend.runs(sweep_id) == [recorded]


def test_first_step_time_is_kept_and_non_finite_results_are_none(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    run_id = _claim(queue, sweep_id)
    queue.record_started(run_id)
    (first,) = queue_backend.runs(sweep_id)
    assert first.started_at is not None
    queue.record_started(run_id)
    queue.record_result(run_id, 0.25, {"eval_loss": 0.25, "eval_accuracy": float("nan")})
    (recorded,) = queue_backend.runs(sweep_id)
    assert recorded.started_at == first.started_at
    assert recorded.objective == 0.25
    assert recorded.metrics == {"eval_loss": 0.25, "eval_accuracy": None}

    for bad in (math.nan, math.inf, -math.inf):
        queue.record_result(run_id, bad, {})
        (recorded,) = queue_backend.runs(sweep_id)
        assert recorded.objective is None and not recorded.has_finite_objective


def test_heartbeat_marks_the_run_alive_now(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    run = queue.claim_next(sweep_id, "w")
    assert run is not None and run.heartbeat_at is not None
    queue.heartbeat(run.id)
    (later,) = queue_backend.runs(sweep_id)
    assert later.heartbeat_at is not None and later.heartbeat_at >= run.heartbeat_at


def test_history_is_by_step_and_a_step_reported_again_replaces_it(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    run_id = _claim(queue, sweep_id)
    other = _claim(queue, sweep_id)
    assert queue.history(run_id) == []
    queue.record_history(run_id, 20, {"eval_loss": 0.5})
    queue.record_history(run_id, 10, {"eval_loss": 0.9, "epoch": 1.0})
    queue.record_history(run_id, 20, {"eval_loss": 0.4, "_step": 999})
    queue.record_history(other, 10, {"eval_loss": 0.1})
    assert queue.history(run_id) == [
        {"_step": 10, "eval_loss": 0.9, "epoch": 1.0},
        {"_step": 20, "eval_loss": 0.4},
    ]
    assert queue.history(other) == [{"_step": 10, "eval_loss": 0.1}]
    # The engine sees the reported history when it chooses the next run.
    assert queue.claim_next(sweep_id, "w") is not None


def test_records_of_an_unknown_run_are_store_errors(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    calls: dict[str, Callable[[], object]] = {
        "heartbeat": lambda: queue.heartbeat("nope"),
        "record_started": lambda: queue.record_started("nope"),
        "record_history": lambda: queue.record_history("nope", 1, {"loss": 1.0}),
        "history": lambda: queue.history("nope"),
        "record_result": lambda: queue.record_result("nope", 1.0, {}),
        "finish_run": lambda: queue.finish_run("nope", RunEnd(0)),
    }
    for name, call in calls.items():
        with pytest.raises(StoreError, match="nope") as raised:
            call()
        assert "\n" not in str(raised.value), name


def test_reports_about_an_ended_run_change_nothing(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    run_id = _claim(queue, sweep_id)
    queue.record_history(run_id, 1, {"eval_loss": 0.5})
    queue.record_result(run_id, 0.5, {"eval_loss": 0.5})
    queue.finish_run(run_id, RunEnd(0, stopped=True))
    (ended,) = queue_backend.runs(sweep_id)

    queue.heartbeat(run_id)
    queue.record_started(run_id)
    queue.record_history(run_id, 2, {"eval_loss": 0.1})
    queue.record_result(run_id, 0.1, {"eval_loss": 0.1})
    assert queue_backend.runs(sweep_id) == [ended]
    assert queue.history(run_id) == [{"_step": 1, "eval_loss": 0.5}]


def test_engine_numpy_values_are_stored_as_plain_json(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    config = {
        "method": "random",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {
            "steps": {"distribution": "q_uniform", "min": 8, "max": 64, "q": 8},
            "width": {"distribution": "q_log_uniform_values", "min": 1, "max": 64, "q": 1},
            "lr": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        },
    }
    sweep_id = queue_backend.create(config)
    for _ in range(5):
        run = queue.claim_next(sweep_id, "w")
        assert run is not None
        assert {type(v) for v in run.params.values()} <= {int, float}
        assert json.loads(json.dumps(run.params)) == run.params


def test_a_trial_gets_what_it_needs_to_report_here(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    run_id = _claim(queue, sweep_id)
    env = queue.trial_env(sweep_id, run_id)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    assert env["WANDB_RUN_ID"] == run_id and env["WBSWEEP_SWEEP_ID"] == sweep_id
    # No sweep id W&B would record for the run: no W&B server knows this sweep.
    assert "WANDB_SWEEP_ID" not in env
    assert sweep_id in queue.work_dir(sweep_id)


def _claim_all(reopen: Callable[[], Backend], sweep_id: str, worker: str, out: str) -> None:
    queue = _queue(reopen())
    claimed = []
    while (run := queue.claim_next(sweep_id, worker)) is not None:
        claimed.append(run.params)
        queue.finish_run(run.id, RunEnd(0))
    Path(out).write_text(json.dumps(claimed))


def test_sixteen_processes_never_share_a_run_nor_pass_run_cap(
    queue_backend: Backend, queue_reopen: Callable[[], Backend], tmp_path: Path
) -> None:
    config = {
        "method": "grid",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {"a": {"values": list(range(6))}, "b": {"values": [0, 1, 2, 3]}},
        "run_cap": 20,
    }
    sweep_id = queue_backend.create(config)
    ctx = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"w{i}.json") for i in range(16)]
    workers = [
        ctx.Process(target=_claim_all, args=(queue_reopen, sweep_id, f"w{i}", out))
        for i, out in enumerate(outs)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
        assert worker.exitcode == 0
    claimed = [tuple(sorted(p.items())) for out in outs for p in json.loads(Path(out).read_text())]
    assert len(claimed) == 20 and len(set(claimed)) == 20  # run_cap exact, no config twice
    runs = queue_backend.runs(sweep_id)
    assert len(runs) == 20 and all(run.state is RunState.FINISHED for run in runs)  # none lost


def test_a_run_whose_worker_went_silent_is_crashed_and_its_params_run_again(
    queue_reopen: Callable[[], Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WBSWEEP_HEARTBEAT_TIMEOUT", "1")
    backend = queue_reopen()
    queue = _queue(backend)
    assert queue.heartbeat_timeout == 1.0 and queue.heartbeat_every < 1.0
    sweep_id = backend.create({**GRID, "method": "random", "run_cap": 2})
    lost, alive = queue.claim_next(sweep_id, "gone"), queue.claim_next(sweep_id, "alive")
    assert lost is not None and alive is not None
    assert queue.claim_next(sweep_id, "w3") is None  # run_cap: both runs are taken
    time.sleep(0.6)
    queue.heartbeat(alive.id)
    time.sleep(0.6)

    # Every read shows it at once, with the reason; the live run is untouched.
    seen = {run.id: run for run in backend.runs(sweep_id)}
    assert seen[lost.id].state is RunState.CRASHED and queue.run(lost.id).state is RunState.CRASHED
    assert "gone" in (seen[lost.id].reason or "") and "heartbeat" in (seen[lost.id].reason or "")
    assert seen[alive.id].state is RunState.RUNNING
    assert not queue.maybe_finish_sweep(sweep_id)

    # The next claim reruns its params, linked to it, past run_cap.
    rerun = queue.claim_next(sweep_id, "w3")
    assert rerun is not None and rerun.params == lost.params and rerun.retry_of == lost.id
    assert queue.claim_next(sweep_id, "w4") is None  # one rerun, no more
    # The lost worker's late reports change nothing: the run stays crashed.
    queue.heartbeat(lost.id)
    queue.record_result(lost.id, 0.1, {})
    assert queue.finish_run(lost.id, RunEnd(0)) is RunState.CRASHED

    for run in (alive, rerun):
        queue.record_result(run.id, 0.5, {})
        assert queue.finish_run(run.id, RunEnd(0)) is RunState.FINISHED
    assert queue.maybe_finish_sweep(sweep_id)  # with its full count of finished runs
    states = [run.state for run in backend.runs(sweep_id)]
    assert states.count(RunState.FINISHED) == 2 and states.count(RunState.CRASHED) == 1


def test_a_failed_run_keeps_its_one_line_reason(queue_backend: Backend) -> None:
    queue = _queue(queue_backend)
    sweep_id = queue_backend.create(GRID)
    failed, done = _claim(queue, sweep_id), _claim(queue, sweep_id)
    why = "model_init raised ValueError: no such size\n  (line 12)"
    assert queue.finish_run(failed, RunEnd(1, reason=why)) is RunState.FAILED
    assert queue.finish_run(done, RunEnd(0, reason="ignored")) is RunState.FINISHED
    runs = {run.id: run for run in queue_backend.runs(sweep_id)}
    assert runs[failed].reason == "model_init raised ValueError: no such size (line 12)"
    assert runs[done].reason is None


def test_hyperband_in_the_queue_stops_only_a_running_run_that_falls_behind(
    queue_backend: Backend,
) -> None:
    queue = _queue(queue_backend)
    hyperband = {"type": "hyperband", "min_iter": 2, "eta": 2}
    config = {**GRID, "early_terminate": hyperband, "metric": {"name": "loss", "goal": "minimize"}}
    sweep_id = queue_backend.create(config)
    curves = {"good": [1.0, 0.5, 0.3], "fair": [2.0, 1.0, 0.6], "bad": [5.0, 5.0]}
    ids = {}
    for name, curve in curves.items():
        ids[name] = _claim(queue, sweep_id)
        for step, loss in enumerate(curve, start=1):
            queue.record_history(ids[name], step, {"loss": loss})
        if name != "bad":
            assert not queue.should_stop(ids[name])
            queue.finish_run(ids[name], RunEnd(0))
    assert queue.should_stop(ids["bad"])
    assert not queue.should_stop(ids["good"])  # finished runs are never stopped
    plain = queue_backend.create(GRID)  # no early_terminate: nothing is ever stopped
    run_id = _claim(queue, plain)
    queue.record_history(run_id, 1, {"objective": 1e9})
    assert not queue.should_stop(run_id)
