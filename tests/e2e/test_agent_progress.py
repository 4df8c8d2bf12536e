"""``wbsweep agent``'s live progress, as a user sees it: the console script in a terminal.

In a pty (a real terminal) the agent redraws the sweep in place and the
workers' output goes to their log files; with stdout a pipe it logs plain lines
as before; on W&B the same display stands in for the ``wandb agent`` output.
Slow: each runs the ``wbsweep`` console script and real trial processes.
"""

from __future__ import annotations

import json
import os
import re
import select
import time
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    WBSWEEP,
    invoke,
    invoke_create,
    invoke_status,
    start_in_terminal,
    wbsweep,
)
from wandb_double import WandbDouble

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: ``tests/sweeps/grid12.py`` shrunk to two points (read at ``create``).
_TWO_POINTS = {"WBSWEEP_TEST_GRID_LRS": "1e-4", "WBSWEEP_TEST_GRID_BATCHES": "8,16"}


def _two_point_sweep() -> str:
    """A local sweep of ``grid12.py`` shrunk to two points, created in this process (what
    these tests watch is the agent's console script, not ``create``'s)."""
    made = invoke("create", str(TEST_SWEEPS / "grid12.py"), "--json", **_TWO_POINTS)
    assert made.exit_code == 0, made.stderr
    return str(json.loads(made.stdout)["sweep_id"])


def _in_a_terminal(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` with a pty as its terminal; its exit code and everything it drew."""
    proc, leader = start_in_terminal(argv)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the agent closed the terminal: it is done
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return proc.returncode, screen.decode(errors="replace")


def test_agent_draws_live_progress_in_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trials of a few seconds (0.2 s a step), so a redraw falls inside each one.
    record = tmp_path / "records"
    record.mkdir()
    monkeypatch.setenv("WBSWEEP_TEST_RECORD_DIR", str(record))
    monkeypatch.setenv("WBSWEEP_TEST_SLEEP", "0.2")
    sweep_id = invoke_create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "2")
    code, screen = _in_a_terminal([WBSWEEP, "agent", sweep_id], timeout=400)
    text = _ESCAPE.sub("", screen)
    assert code == 0, text[-3000:]
    runs = invoke_status(sweep_id)["runs"]
    assert [r["state"] for r in runs] == ["finished", "finished"]
    assert "\x1b[1A" in screen  # redrawn in place (cursor up), not line after line
    worker = runs[0]["worker"]
    for run in runs:
        # A frame while it trained: its worker's line, step of total on a bar, time so far.
        line = rf"{worker}\s+run {run['id']}\s+.*━.*\s(\d+)/(\d+)\s+(?:\d+m)?\d+s"
        seen = re.findall(line, text)
        assert seen, f"no progress line for {run['id']}"
        total = int(seen[-1][1])
        assert {int(step) for step, _ in seen} - {total}  # a step before the last was drawn
        assert run["progress"]["step"] == total  # the record's last report: the last step
    best = min(runs, key=lambda r: r["objective"])
    assert re.search(rf"best objective {best['objective']:.6g}\s+run {best['id']}", text)
    assert "2 finished, 0 running, 0 failed of 2" in text
    # The workers' own lines went to their log file, named once, not to the terminal.
    log = Path(f".wbsweep/sweep-{sweep_id}/worker-{worker}.log").absolute()
    assert f"its output: {log}" in text
    assert f"run {runs[0]['id']} started" not in text
    assert f"[{worker}] run {runs[0]['id']} started" in log.read_text()
    assert text.rstrip().endswith(f"Sweep {sweep_id}: finished; runs: 2 finished.")


def test_agent_logs_plain_lines_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = _two_point_sweep()
    result = wbsweep("agent", sweep_id, WBSWEEP_TEST_RECORD_DIR=str(record), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = invoke_status(sweep_id)["runs"]
    for run in runs:
        assert re.search(rf"\] run {run['id']} started: ", result.stdout)
        assert re.search(rf"\] run {run['id']} finished: ", result.stdout)
    assert "\x1b[" not in result.stdout and "━" not in result.stdout
    assert not list(Path(".wbsweep").glob("sweep-*/worker-*.log"))


def test_on_wandb_the_display_stands_in_for_the_agents_output(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    made = wbsweep(
        "create", str(TEST_SWEEPS / "grid12.py"), "--backend", "wandb", "--project", "proj",
        "--json", **_TWO_POINTS,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = json.loads(made.stdout)["sweep_id"]
    result = wbsweep(
        "agent", path, "--progress", WBSWEEP_TEST_RECORD_DIR=str(record),
        WBSWEEP_TEST_WANDB="1", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    runs = wandb_double.runs(path.split("/")[-1])
    assert [r["state"] for r in runs] == ["finished", "finished"]
    out = result.stdout + result.stderr
    assert "wandb agent" not in out and "wandb_agent" not in out  # none of its output here
    assert f"Sweep {path}" in out and "2 finished, 0 running, 0 failed of 2" in out
    best = min(runs, key=lambda r: r["summary"]["objective"])
    assert re.search(rf"best objective \S+\s+run {best['id']}", out)
    (log,) = Path(".wbsweep").glob("sweep-*/worker-*.log")
    assert f"its output: {log.absolute()}" in out
    kept = log.read_text()  # where `wandb agent` said what it did
    assert "Starting wandb agent" in kept and all(f"run: {r['id']}" in kept for r in runs)
    assert wandb_double.api_key not in out + kept


def test_no_progress_in_a_terminal_logs_plain_lines(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = _two_point_sweep()
    os.environ["WBSWEEP_TEST_RECORD_DIR"] = str(record)  # the trials write here
    try:
        code, screen = _in_a_terminal([WBSWEEP, "agent", sweep_id, "--no-progress"], timeout=300)
    finally:
        del os.environ["WBSWEEP_TEST_RECORD_DIR"]
    assert code == 0, screen
    for run in invoke_status(sweep_id)["runs"]:
        assert f"run {run['id']} started: " in screen and f"run {run['id']} finished: " in screen
    assert "\x1b[1A" not in screen and "━" not in screen


def test_a_worker_that_gives_up_says_why_on_the_terminal(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = _two_point_sweep()
    result = wbsweep(
        "agent", sweep_id, "--progress", "--max-consecutive-failures", "1",
        WBSWEEP_TEST_RECORD_DIR=str(record), WBSWEEP_TEST_FAIL_BATCH="8", timeout=300,
    )  # fmt: skip
    assert result.returncode == 9, result.stdout + result.stderr
    (run,) = invoke_status(sweep_id)["runs"]
    assert run["state"] == "failed"
    out = result.stdout
    # the display's last frame, then the worker's own last word, from its log
    assert f"last failure: run {run['id']}" in out
    assert re.search(r"worker 0 ended with exit 9: \[\S+\] 1 trials failed in a row", out)
