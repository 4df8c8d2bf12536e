"""The live progress of ``wbsweep agent``: what rich draws from a sweep's record.

The records are a real local store's, made through its run queue as workers and
trials make them (claim, progress reports, result, finish); the frames are
rich's own output, captured by a recording console that acts as a terminal.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from rich.console import Console

from wbsweep.backends.base import RunEnd
from wbsweep.backends.local import LocalBackend
from wbsweep.progress import LiveProgress, render
from wbsweep.training import ProgressReport

GRID = {
    "method": "grid",
    "metric": {"name": "loss", "goal": "minimize"},
    "parameters": {"lr": {"values": [0.1, 0.01, 0.001, 0.0001]}, "bs": {"value": 8}},
    "command": ["${env}", "${interpreter}", "-c", "pass"],
}


def _console() -> Console:
    return Console(record=True, force_terminal=True, width=130, color_system=None)


def _text(console: Console) -> str:
    return console.export_text()


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "store.db")


def _three_runs(store: LocalBackend) -> tuple[str, list[str]]:
    """A grid sweep of 4: one finished (loss 0.5), one failed, one at step 40 of 100."""
    sweep_id = store.create(GRID)
    done, bad, live = (store.claim_next(sweep_id, w) for w in ("h-w0", "h-w1", "h-w0"))
    assert done and bad and live
    store.record_result(done.id, 0.5, {"eval_loss": 0.5})
    store.finish_run(done.id, RunEnd(0))
    store.finish_run(bad.id, RunEnd(1, "ValueError: lr too big"))
    clock = iter([1000.0, 1001.0, 1065.0])
    report = ProgressReport(
        lambda p: store.record_progress(live.id, p), every=0, clock=lambda: next(clock)
    )
    report.step(1, 100)
    report.step(40, 100)
    report.evaluated(40, 0.52)
    return sweep_id, [done.id, bad.id, live.id]


def test_one_line_per_worker_with_step_bar_metric_and_time(store: LocalBackend) -> None:
    sweep_id, (done, bad, live) = _three_runs(store)
    console = _console()
    console.print(render(store.sweep(sweep_id), store.runs(sweep_id), ["h-w0", "h-w1"], now=1125.0))
    text = _text(console)
    lines = text.splitlines()
    assert lines[0].split() == [
        "Sweep", sweep_id, "running", "1", "finished,", "1", "running,", "1", "failed", "of", "4",
    ]  # fmt: skip
    assert re.search(rf"best loss 0\.5\s+run {done}\s+bs=8 lr=0\.1", text)
    (w0,) = [line for line in lines if line.startswith("h-w0")]
    # run id, its params, a bar, step of total, the latest evaluation, 2 min since its first step
    assert re.search(rf"run {live}\s+bs=8 lr=0\.001\s+\S+\s+40/100\s+loss 0\.52 @ 40\s+2m05s", w0)
    assert "━" in w0  # rich's progress bar
    (w1,) = [line for line in lines if line.startswith("h-w1")]
    assert w1.split() == ["h-w1", "waiting"]
    assert f"last failure: run {bad}: ValueError: lr too big" in text
    assert f"wbsweep logs {sweep_id} {bad}" in text


def test_a_narrow_terminal_cuts_the_params_not_the_numbers(store: LocalBackend) -> None:
    sweep_id, (_, _, live) = _three_runs(store)
    lines = {}
    for width in (100, 72):
        console = Console(record=True, force_terminal=True, width=width, color_system=None)
        console.print(render(store.sweep(sweep_id), store.runs(sweep_id), ["h-w0"], now=1125.0))
        (lines[width],) = [ln for ln in console.export_text().splitlines() if ln.startswith("h-w0")]
        assert len(lines[width].rstrip()) <= width
    assert re.search(rf"run {live}\s+bs=8 lr=0\.001\s", lines[100])
    assert "lr=" not in lines[72]  # no room for the params: left out, the rest kept whole
    assert re.search(rf"h-w0\s+run {live}\s+\S+\s+40/100\s+loss 0\.52 @ 40\s+2m05s$", lines[72])


def test_a_run_of_another_node_gets_its_own_line(store: LocalBackend) -> None:
    sweep_id = store.create({**GRID, "method": "random", "run_cap": 3})
    run = store.claim_next(sweep_id, "other-host-w0")
    assert run is not None
    console = _console()
    console.print(render(store.sweep(sweep_id), store.runs(sweep_id), ["h-w0"]))
    text = _text(console)
    assert "0 finished, 1 running, 0 failed of 3" in text  # run_cap, not a grid
    assert re.search(rf"other-host-w0\s+run {run.id}\s+.*starting", text)
    assert re.search(r"h-w0\s+waiting", text)  # this node's own worker
    assert "best" not in text  # nothing finished yet


def test_the_display_follows_the_record_in_place(store: LocalBackend) -> None:
    sweep_id = store.create(GRID)
    run = store.claim_next(sweep_id, "h-w0")
    assert run is not None
    console = _console()
    reads = []

    def read():  # what the agent passes: the sweep and its runs, through the backend
        reads.append(time.monotonic())
        return store.sweep(sweep_id), store.runs(sweep_id)

    with LiveProgress(read, ["h-w0"], console=console, poll=0.05):
        store.record_progress(run.id, {"step": 3, "total": 10, "at": time.time()})
        _wait_for(lambda: "3/10" in _text_now(console))
        store.record_result(run.id, 0.25, {})
        store.finish_run(run.id, RunEnd(0))
        print("a line the agent logs meanwhile")
        _wait_for(lambda: "1 finished" in _text_now(console))
    text = _text(console)
    assert len(reads) >= 3  # polled, not drawn once
    assert "a line the agent logs meanwhile" in text  # printed above the display
    # the last frame stays: the run finished, and it is the best
    assert re.search(rf"best loss 0\.25\s+run {run.id}", text)
    assert "1 finished, 0 running, 0 failed of 4" in text


def test_a_record_that_cannot_be_read_is_said_and_the_display_goes_on(
    store: LocalBackend,
) -> None:
    sweep_id = store.create(GRID)
    console = _console()
    calls = []
    from wbsweep.errors import StoreError

    def read():
        calls.append(1)
        if len(calls) == 2:
            raise StoreError("database is locked")
        return store.sweep(sweep_id), store.runs(sweep_id)

    with LiveProgress(read, ["h-w0"], console=console, poll=0.05):
        _wait_for(lambda: len(calls) >= 4)
    text = _text(console)
    assert "cannot read the sweep just now: database is locked" in text
    # the next poll drew the sweep again
    assert text.rindex("h-w0  waiting") > text.index("database is locked")


def _text_now(console: Console) -> str:
    return console.export_text(clear=False)


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the display never showed it"
        time.sleep(0.02)


def test_progress_reports_are_cheap_rank_zero_writes_every_few_seconds(
    store: LocalBackend,
) -> None:
    sweep_id = store.create(GRID)
    run = store.claim_next(sweep_id, "h-w0")
    assert run is not None
    now = [0.0]
    sent = []

    def send(progress):
        sent.append(progress)
        store.record_progress(run.id, progress)

    report = ProgressReport(send, every=5.0, clock=lambda: now[0])
    for step in range(1, 101):  # 100 steps over 25 s: a report at the first, then every 5 s
        now[0] = step * 0.25
        report.step(step, 100)
    assert [p["step"] for p in sent] == [1, 21, 41, 61, 81]
    report.evaluated(100, float("nan"))  # a NaN evaluation is kept as "no value"
    seen = store.runs(sweep_id)[0].progress
    assert seen["step"] == 100 and seen["total"] == 100 and seen["eval"] is None
    assert seen["started_at"] == 0.25
    report.trained(100, 100)  # the Trainer's on_train_end: the final evaluation comes next
    console = _console()
    console.print(render(store.sweep(sweep_id), store.runs(sweep_id), ["h-w0"]))
    assert re.search(rf"run {run.id}\s+.*100/100\s+final evaluation", console.export_text())
    assert len(sent) == 7  # first step, four every 5 s, the evaluation, the end of training
