"""The CLI worker over the run loop: heartbeats while a trial runs, and the trial's log.

The trial here is a hand-written sweep ``command`` (as a whole W&B sweep config
may carry), so no training is needed to see what the worker does around it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    WBSWEEP,
    invoke,
    invoke_create,
    invoke_status,
    processes_mentioning,
    start_agent,
    wait_for,
    wait_for_ranks_to_train,
)

from wbsweep import worker as worker_module
from wbsweep.backends.base import DriveOptions
from wbsweep.backends.local import LocalBackend
from wbsweep.errors import EXIT_FAILED, EXIT_GAVE_UP
from wbsweep.states import RunState

pytestmark = pytest.mark.slow


def sweep_running(store: LocalBackend, code: str, points: int = 1) -> str:
    return store.create(
        {
            "method": "grid",
            "metric": {"name": "objective", "goal": "minimize"},
            "parameters": {"x": {"values": list(range(1, points + 1))}},
            "command": [sys.executable, "-c", code, "${args_json_file}"],
        }
    )


def test_a_running_trial_heartbeats_and_its_log_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WBSWEEP_HEARTBEAT_TIMEOUT", "1.5")  # a beat every 0.5 s
    store = LocalBackend(tmp_path / "store.db")
    code = "import sys, time; print('params in', sys.argv[1]); time.sleep(2)"
    sweep_id = sweep_running(store, code)
    lines: list[str] = []

    outcomes = worker_module.Worker(store, sweep_id, DriveOptions("w0", log=lines.append)).run()

    (run,) = store.runs(sweep_id)
    assert [o.state for o in outcomes] == [RunState.FINISHED] == [run.state]
    assert run.heartbeat_at is not None and run.claimed_at is not None
    assert run.heartbeat_at - run.claimed_at >= 1.0  # beat while the trial ran, not only at claim
    log = Path(store.work_dir(sweep_id)) / f"run-{run.id}.log"
    assert "params in" in log.read_text() and f"config-{run.id}.json" in log.read_text()
    assert any(f"run {run.id} finished" in line for line in lines)
    assert store.sweep(sweep_id).state == "FINISHED"


def test_a_failed_trial_shows_the_end_of_its_log(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "store.db")
    sweep_id = sweep_running(store, "import sys; print('the reason it failed'); sys.exit(3)")
    lines: list[str] = []

    worker_module.Worker(store, sweep_id, DriveOptions("w0", log=lines.append)).run()

    (run,) = store.runs(sweep_id)
    assert run.state == RunState.FAILED and run.exit_code == 3
    shown = "\n".join(lines)
    assert "failed: exit 3" in shown and "the reason it failed" in shown


def test_a_sigkilled_worker_s_run_is_crashed_then_rerun_and_the_sweep_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WBSWEEP_HEARTBEAT_TIMEOUT", "2")  # here, and in every worker
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    mark = tmp_path / "go-fast"
    code = f"import os, time; time.sleep(0.2 if os.path.exists({str(mark)!r}) else 60)"
    sweep_id = store.create(
        {
            "method": "grid",
            "metric": {"name": "objective", "goal": "minimize"},
            "parameters": {"x": {"values": [1, 2]}},
            "command": [sys.executable, "-c", code, "${args_json_file}"],
        }
    )
    env = dict(os.environ)
    argv = [sys.executable, "-m", "wbsweep.worker", str(store.path), sweep_id]
    doomed = subprocess.Popen([*argv, "doomed"], env=env)
    try:
        wait_for(
            lambda: bool(store.runs(sweep_id)) and bool(processes_mentioning(sweep_id)),
            timeout=60,
            what="the first trial to start",
        )
        (lost,) = store.runs(sweep_id)
        doomed.kill()  # the OOM killer: no handler runs, nothing is recorded
        doomed.wait(timeout=30)
    finally:
        doomed.kill()
    mark.touch()

    # Its trial dies with it, and within the timeout every reader sees the run crashed.
    wait_for(lambda: not processes_mentioning(lost.id), timeout=30, what="the trial to end")
    wait_for(
        lambda: invoke_status(sweep_id)["runs"][0]["state"] == "crashed",
        timeout=10,
        what="status to show the run crashed",
    )
    shown = invoke_status(sweep_id)["runs"][0]
    assert "doomed" in shown["reason"] and shown["id"] == lost.id

    # A new worker reruns its params; the sweep ends with both points finished.
    subprocess.run([*argv, "fresh"], env=env, timeout=120, check=True)
    runs = store.runs(sweep_id)
    finished = [run for run in runs if run.state == RunState.FINISHED]
    assert sorted(run.params["x"] for run in finished) == [1, 2]
    (rerun,) = [run for run in runs if run.retry_of == lost.id]
    assert rerun.params == lost.params and rerun.state == RunState.FINISHED
    assert store.sweep(sweep_id).state == "FINISHED"
    assert not processes_mentioning(sweep_id)


def test_the_agent_gives_up_on_failing_trials_naming_the_cause(tmp_path: Path) -> None:
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    code = (
        "import sys; print('Loading...'); "
        "print('wbsweep.trial: error: model_init raised ValueError: no size 7'); sys.exit(6)"
    )
    sweep_id = store.create(
        {
            "method": "grid",
            "metric": {"name": "objective", "goal": "minimize"},
            "parameters": {"x": {"values": list(range(10))}},
            "command": [sys.executable, "-c", code],
        }
    )
    result = subprocess.run(
        [WBSWEEP, "agent", sweep_id, "--max-consecutive-failures", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_GAVE_UP, result.stdout + result.stderr
    assert "2 trials failed in a row" in result.stdout
    assert "model_init raised ValueError: no size 7" in result.stdout
    runs = store.runs(sweep_id)
    assert [run.state for run in runs] == [RunState.FAILED] * 2
    assert {run.reason for run in runs} == {"model_init raised ValueError: no size 7"}
    shown = invoke("status", sweep_id)
    assert "model_init raised ValueError" in shown.stdout
    log = store.trial_log(sweep_id, runs[0].id)
    assert f"Log of {runs[0].id}: {log}" in shown.stdout
    assert invoke_status(sweep_id)["runs"][0]["log"] == log


@pytest.mark.parametrize("how", ["cancel", "stop"])
def test_a_running_agent_exits_when_its_sweep_is_canceled_or_stopped(how: str) -> None:
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    sweep_id = sweep_running(store, "import time; time.sleep(6)", points=3)
    agent = subprocess.Popen([WBSWEEP, "agent", sweep_id], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(
            lambda: any(processes_mentioning(run.id) for run in store.runs(sweep_id)),
            timeout=60,
            what="a trial to start",
        )
        assert invoke(how, sweep_id).exit_code == 0
        out, _ = agent.communicate(timeout=60)
    finally:
        agent.kill()
    assert agent.returncode == 0, out
    runs = store.runs(sweep_id)
    # cancel ends the running trial; stop lets it finish and starts no other
    wanted = RunState.STOPPED if how == "cancel" else RunState.FINISHED
    assert [run.state for run in runs] == [wanted]
    assert store.sweep(sweep_id).state == ("CANCELED" if how == "cancel" else "FINISHED")
    assert not processes_mentioning(sweep_id)


# A trial that reports its loss to the store at every "evaluation", as the lifecycle does:
# x=1 and x=2 learn, x=3 does not.
_CURVES = """
import json, os, sys, time
from wbsweep.backends.local import LocalBackend
params = json.load(open(sys.argv[1]))
store, run = LocalBackend(os.environ["WBSWEEP_STORE"]), os.environ["WANDB_RUN_ID"]
for step in range(1, 9):
    loss = params["x"] / step if params["x"] < 3 else 5.0
    store.record_history(run, step, {"loss": loss})
    time.sleep(0.4)
store.record_result(run, loss, {"eval_loss": loss})
"""


def test_hyperband_stops_a_bad_run_on_the_local_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "_CANCEL_POLL", 0.3)
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    sweep_id = store.create(
        {
            "method": "grid",
            "metric": {"name": "loss", "goal": "minimize"},
            "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
            "parameters": {"x": {"values": [1, 2, 3]}},
            "command": [sys.executable, "-c", _CURVES, "${args_json_file}"],
        }
    )
    lines: list[str] = []
    worker_module.Worker(store, sweep_id, DriveOptions("w0", log=lines.append)).run()

    best, good, bad = store.runs(sweep_id)
    assert [run.state for run in (best, good)] == [RunState.FINISHED] * 2
    assert (bad.params, bad.state) == ({"x": 3}, RunState.STOPPED)
    assert any(f"run {bad.id}: stopped early" in line for line in lines)
    kept = store.history(bad.id)  # a stopped run keeps what it reported
    assert kept and len(kept) < 8 and all(row["loss"] == 5.0 for row in kept)
    assert len(store.history(good.id)) == 8
    assert "stopped" in invoke("status", sweep_id).stdout
    assert store.sweep(sweep_id).state == "FINISHED"


def test_a_rank_killed_by_a_signal_is_a_crash_and_its_params_run_again(tmp_path: Path) -> None:
    record, fast = tmp_path / "records", tmp_path / "fast"
    record.mkdir()
    sweep_id = invoke_create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "1")
    knobs = {"WBSWEEP_TEST_SLEEP": "1", "WBSWEEP_TEST_SLEEP_UNLESS": str(fast)}
    # One torch thread for the one rank (a user's setting): more only spin on a small machine.
    agent = start_agent(sweep_id, record, OMP_NUM_THREADS="1", **knobs)
    try:
        (rank,) = wait_for_ranks_to_train(record, 1)
        fast.touch()
        os.kill(rank, signal.SIGKILL)  # the OOM killer takes one rank
        agent.communicate(timeout=180)
    finally:
        agent.kill()
    assert agent.returncode == 0
    crashed, rerun = invoke_status(sweep_id)["runs"]
    assert crashed["state"] == "crashed" and "killed by SIGKILL" in crashed["reason"]
    assert (rerun["state"], rerun["retry_of"], rerun["params"]) == (
        "finished",
        crashed["id"],
        crashed["params"],
    )


def test_an_agent_whose_every_trial_failed_does_not_exit_0() -> None:
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    sweep_id = sweep_running(store, "import sys; sys.exit(3)", points=2)
    result = subprocess.run([WBSWEEP, "agent", sweep_id], capture_output=True, timeout=120)
    assert result.returncode == EXIT_FAILED
    assert [run.state for run in store.runs(sweep_id)] == [RunState.FAILED] * 2
