"""``wbsweep status``, ``wbsweep sweeps`` and ``wbsweep logs`` over a real local store.

Runs are put in the store through its run queue, as workers and trials do
(claim, started, progress, result, finish); the commands run in this process
(click's runner) or, where a terminal matters (``--watch``), as the real
console script in a pty.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import WBSWEEP, invoke, start_in_terminal

from wbsweep.backends.base import RunEnd
from wbsweep.backends.local import LocalBackend

CONFIG = {
    "method": "random",
    "run_cap": 5,
    "metric": {"name": "accuracy", "goal": "maximize"},
    "parameters": {"lr": {"values": [0.1, 0.01, 0.001]}},
    "command": ["${env}", "${interpreter}", "-c", "pass"],
}


def _sweep(objectives: list[float | None], states: list[str]) -> tuple[str, list[str]]:
    """A sweep of the default store whose runs ended as told (``running`` leaves one open)."""
    store = LocalBackend()
    sweep_id = store.create(CONFIG)
    ids = []
    for objective, state in zip(objectives, states, strict=True):
        run = store.claim_next(sweep_id, "host-w0")
        assert run is not None
        store.record_started(run.id, {"ranks": 2, "mixed_precision": "bf16"})
        if objective is not None:
            store.record_result(run.id, objective, {"eval_accuracy": objective})
        if state == "running":
            store.record_progress(run.id, {"step": 7, "total": 20, "at": time.time()})
        else:
            code = {"finished": 0, "failed": 1, "crashed": -9}[state]
            store.finish_run(run.id, RunEnd(code, "CUDA out of memory" if code else None))
        ids.append(run.id)
    return sweep_id, ids


def test_status_lists_runs_best_first_by_the_goal_with_the_best_marked() -> None:
    sweep_id, (low, high, broken, live, mid) = _sweep(
        [0.6, 0.9, None, None, 0.7], ["finished", "finished", "failed", "running", "finished"]
    )
    result = invoke("status", sweep_id)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Sweep {sweep_id}: running, 5/5 runs, maximize accuracy")
    header = lines[1].split()
    assert header == [
        "run", "state", "accuracy", "params", "ranks", "claimed", "started", "took", "step", "note",
    ]  # fmt: skip
    rows = lines[2:7]
    order = [row.split()[0] for row in rows]
    assert order == [high, mid, low, broken, live]  # maximize: 0.9, 0.7, 0.6, then no objective
    assert rows[0].startswith(f"{high} *") and not any(" * " in r for r in rows[1:])
    assert "2 bf16" in rows[0]  # the ranks per trial, as the trial ran
    clock = r"\d\d:\d\d:\d\d"
    assert re.search(rf"{clock}\s+{clock}\s+\d+s", rows[0])  # claimed, started, took
    assert "CUDA out of memory" in rows[3]
    assert "7/20" in rows[4]  # how far the running trial is
    assert "* best so far" in result.stdout


def test_status_json_keeps_every_field() -> None:
    sweep_id, (run_id,) = _sweep([None], ["running"])
    out = json.loads(invoke("status", sweep_id, "--json").stdout)
    (run,) = out["runs"]
    assert run["id"] == run_id and run["state"] == "running"
    for field in ("claimed_at", "started_at", "heartbeat_at", "worker", "ran_as", "reason"):
        assert field in run
    assert run["progress"]["step"] == 7 and run["progress"]["total"] == 20
    assert run["ran_as"]["ranks"] == 2 and run["worker"] == "host-w0"


def test_sweeps_lists_every_sweep_with_state_progress_and_best() -> None:
    first, _ = _sweep([0.5, 0.8], ["finished", "finished"])
    second, _ = _sweep([None], ["failed"])
    LocalBackend().set_state(second, "PAUSED")
    for args in (("sweeps",), ("status",)):
        result = invoke(*args)
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["sweep", "state", "runs", "best", "created"]
        assert re.match(rf"{first}\s+running\s+2 finished of 5\s+accuracy=0\.8 \(\w+\)", lines[1])
        assert re.match(rf"{second}\s+paused\s+1 failed of 5\s+\d{{4}}-", lines[2])
    listed = json.loads(invoke("sweeps", "--json").stdout)
    assert [s["sweep_id"] for s in listed] == [first, second]
    assert listed[0]["runs"]["finished"] == 2 and listed[0]["best"]["objective"] == 0.8
    assert listed[1]["best"] is None and listed[1]["state"] == "PAUSED"


def test_sweeps_of_an_empty_store_says_so(tmp_path: Path) -> None:
    result = invoke("sweeps", "--store", str(tmp_path / "none" / "store.db"))
    assert result.exit_code == 0
    assert result.stdout.strip() == f"No sweeps in local store {tmp_path / 'none' / 'store.db'}."
    assert not (tmp_path / "none").exists()  # reading made no store


def _logged_run(text: str) -> tuple[str, str, Path]:
    store = LocalBackend()
    sweep_id = store.create(CONFIG)
    run = store.claim_next(sweep_id, "host-w0")
    assert run is not None
    log = Path(store.trial_log(sweep_id, run.id))  # where a worker writes its trial's output
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    return sweep_id, run.id, log


def test_logs_prints_the_trial_log() -> None:
    sweep_id, run_id, log = _logged_run("step 1\nwbsweep.trial: error: ValueError: boom\n")
    result = invoke("logs", sweep_id, run_id)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == log.read_text()
    assert log.name == f"run-{run_id}.log" and log.parent.name == f"sweep-{sweep_id}"


def test_logs_follow_prints_what_is_appended_until_the_run_ends() -> None:
    sweep_id, run_id, log = _logged_run("first line\n")

    def trial() -> None:  # a trial writing while it trains, then its worker records the end
        for n in range(3):
            time.sleep(0.3)
            with log.open("a") as out:
                out.write(f"step {n}\n")
        LocalBackend().finish_run(run_id, RunEnd(0))
        with log.open("a") as out:
            out.write("last words\n")

    writer = threading.Thread(target=trial)
    started = time.monotonic()
    writer.start()
    result = invoke("logs", sweep_id, run_id, "-f")
    writer.join()
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "first line\nstep 0\nstep 1\nstep 2\nlast words\n"
    assert time.monotonic() - started < 6  # ended with the run, not by a timeout


def _next_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line ``proc`` prints, or ``""`` if none comes within ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode() if ready else ""


def test_logs_follow_keeps_going_while_the_run_runs_until_interrupted() -> None:
    sweep_id, run_id, log = _logged_run("hello\n")
    proc = subprocess.Popen(
        [WBSWEEP, "logs", sweep_id, run_id, "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # Each line as it comes (a loaded machine may take seconds to start the command).
        shown = [_next_line(proc, 60)]
        with log.open("a") as out:
            out.write("later\n")
        shown.append(_next_line(proc, 30))
        assert proc.poll() is None  # the run still runs: tail -f goes on
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert shown == ["hello\n", "later\n"] and out.decode() == ""
    assert proc.returncode == 0 and err.decode() == ""  # Ctrl-C leaves quietly


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("logs", "nosuchsweep", "abc"), "no sweep 'nosuchsweep'"),
        (("status", "nosuchsweep", "--watch"), "no sweep 'nosuchsweep'"),
    ],
)
def test_unknown_sweep_is_one_line(args: tuple[str, ...], message: str) -> None:
    LocalBackend().create(CONFIG)  # a store exists, without that sweep
    result = invoke(*args)
    assert result.exit_code == 4
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_run_or_a_run_without_a_log_here_is_one_line() -> None:
    sweep_id, _ = _sweep([None], ["running"])  # claimed, but no worker wrote its log here
    result = invoke("logs", sweep_id, "nosuchrun")
    assert result.exit_code == 4
    assert result.stderr.strip() == f"Error: no run 'nosuchrun' in sweep {sweep_id}"
    run_id = LocalBackend().runs(sweep_id)[0].id
    result = invoke("logs", sweep_id, run_id)
    assert result.exit_code == 4
    assert result.stderr.startswith(f"Error: no log of run {run_id} on this machine")
    assert len(result.stderr.strip().splitlines()) == 1


def test_status_watch_refreshes_in_a_terminal_until_ctrl_c() -> None:
    sweep_id, (run_id,) = _sweep([None], ["running"])
    proc, leader = start_in_terminal([WBSWEEP, "status", sweep_id, "--watch"], 160, 40)
    screen = b""
    try:
        screen += _read_until(leader, b"7/20", 30)
        store = LocalBackend()
        store.record_result(run_id, 0.75, {})
        store.finish_run(run_id, RunEnd(0))
        screen += _read_until(leader, b"best so far", 10)  # the same table, redrawn
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        screen += _read_all(leader)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0
    assert "Traceback" not in text and "Error" not in text
    assert re.search(rf"{run_id} \*\s+finished\s+0\.75", text)


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, f"never saw {needle!r} in {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def _read_all(fd: int) -> bytes:
    seen = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            return seen
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return seen
        if not chunk:
            return seen
        seen += chunk


def test_watch_with_json_is_refused_in_one_line() -> None:
    sweep_id, _ = _sweep([None], ["running"])
    result = invoke("status", sweep_id, "--watch", "--json")
    assert result.exit_code == 10
    assert result.stderr.strip() == "Error: --watch redraws the table: leave out --json"
