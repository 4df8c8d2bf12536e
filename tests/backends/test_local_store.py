"""What only the local store promises: reads beside writers, migrations, its workers' shapes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from wbsweep.backends import LocalBackend, open_backend, queue_from_env
from wbsweep.backends.base import RunEnd
from wbsweep.backends.local import default_store_path
from wbsweep.cli import main
from wbsweep.errors import SweepNotFoundError, UsageError
from wbsweep.states import RunState, SweepState

GRID: dict[str, Any] = {
    "method": "grid",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"a": {"values": [1, 2, 3]}},
}

# A store as wbsweep 0.1 (migration 1 only) left it.
V1_SCHEMA = """
CREATE TABLE migrations (id INTEGER PRIMARY KEY, at REAL);
INSERT INTO migrations VALUES (1, 1700000000.0);
CREATE TABLE sweeps (
    id TEXT PRIMARY KEY, config TEXT NOT NULL, state TEXT NOT NULL,
    sweep_file TEXT, created_at REAL NOT NULL
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY, sweep_id TEXT NOT NULL REFERENCES sweeps(id),
    seq INTEGER NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL, objective REAL,
    metrics TEXT NOT NULL DEFAULT '{}', exit_code INTEGER, worker TEXT,
    created_at REAL NOT NULL, claimed_at REAL, started_at REAL, finished_at REAL,
    UNIQUE (sweep_id, seq)
);
INSERT INTO sweeps VALUES ('oldsweep', '{"method": "grid", "metric": {"name": "objective",
    "goal": "minimize"}, "parameters": {"a": {"values": [1, 2, 3]}}}', 'RUNNING',
    '/old/sweep.py', 1700000000.0);
INSERT INTO runs VALUES ('oldrun01', 'oldsweep', 0, 'finished', '{"a": 1}', 0.5,
    '{"eval_loss": 0.5}', 0, 'w0', 1700000001.0, 1700000001.0, 1700000002.0, 1700000009.0);
INSERT INTO runs VALUES ('oldrun02', 'oldsweep', 1, 'running', '{"a": 2}', NULL,
    '{}', NULL, 'w1', 1700000010.0, 1700000010.0, NULL, NULL);
"""


@pytest.fixture
def writer_holding(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """``hold(path)``: another connection takes the store's write lock until the test ends."""
    held: list[sqlite3.Connection] = []

    def hold(path: Path) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE sweeps SET state = state")
        held.append(db)

    yield hold
    for db in held:
        db.execute("ROLLBACK")
        db.close()


def _within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()`` in a thread; fails (without waiting for it) when it takes longer."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds}s: it queued behind the writer"
    assert result, "the work raised"
    return result[0], time.monotonic() - started


def test_reads_and_status_answer_while_a_writer_holds_the_store(
    tmp_path: Path, writer_holding: Callable[[Path], None]
) -> None:
    path = tmp_path / "store.db"
    store = LocalBackend(path)
    sweep_id = store.create(GRID)
    run = store.claim_next(sweep_id, "w0")
    assert run is not None
    store.record_history(run.id, 1, {"eval_loss": 0.7})
    writer_holding(path)

    def read_everything() -> dict[str, Any]:
        fresh = LocalBackend(path)  # as `wbsweep status` opens it: the migration check too
        status = CliRunner().invoke(main, ["status", sweep_id, "--store", str(path)])
        return {
            "sweep": fresh.sweep(sweep_id).state,
            "runs": [r.id for r in fresh.runs(sweep_id)],
            "run": fresh.run(run.id).state,
            "sweeps": [s.id for s in fresh.sweeps()],
            "sweep_state": fresh.sweep_state(sweep_id),
            "history": fresh.history(run.id),
            "status": (status.exit_code, status.output),
        }

    seen, _ = _within(5.0, read_everything)
    assert seen["sweep"] is SweepState.RUNNING and seen["sweep_state"] is SweepState.RUNNING
    assert seen["runs"] == [run.id] and seen["sweeps"] == [sweep_id]
    assert seen["run"] is RunState.RUNNING
    assert seen["history"] == [{"_step": 1, "eval_loss": 0.7}]
    code, output = seen["status"]
    assert code == 0, output
    assert f"Sweep {sweep_id}: running, 1/3 runs, minimize objective" in output  # of the grid
    assert run.id in output


def test_writes_still_wait_for_the_writer(
    tmp_path: Path, writer_holding: Callable[[Path], None]
) -> None:
    path = tmp_path / "store.db"
    sweep_id = LocalBackend(path).create(GRID)
    writer_holding(path)
    done = threading.Event()

    def pause() -> None:
        LocalBackend(path).set_state(sweep_id, SweepState.PAUSED)
        done.set()

    threading.Thread(target=pause, daemon=True).start()
    assert not done.wait(0.5), "a write went ahead while another held the write lock"


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.close()

    store = LocalBackend(path)
    old, running = store.runs("oldsweep")
    assert (old.id, old.state, old.objective, old.heartbeat_at) == (
        "oldrun01",
        RunState.FINISHED,
        0.5,
        None,
    )
    assert store.sweep("oldsweep").sweep_file == "/old/sweep.py"
    store.heartbeat(running.id)
    store.record_history(running.id, 5, {"eval_loss": 0.3})
    assert store.history(running.id) == [{"_step": 5, "eval_loss": 0.3}]
    assert store.run(running.id).heartbeat_at is not None
    store.record_progress(running.id, {"step": 5, "total": 9})
    assert store.run(running.id).progress == {"step": 5, "total": 9}
    assert store.claim_next("oldsweep", "w2") is not None  # the engine takes the old runs

    with sqlite3.connect(path) as check:
        assert [row[0] for row in check.execute("SELECT id FROM migrations")] == [1, 2, 3, 4, 5]
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Opening it again migrates nothing more.
    assert len(LocalBackend(path).runs("oldsweep")) == 3


def test_a_config_that_is_not_json_registers_nothing(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    with pytest.raises(UsageError, match="not JSON data"):
        store.create({**GRID, "parameters": {"a": {"values": [object()]}}})
    assert store.sweeps() == []


def test_a_new_store_is_created_by_the_first_sweep_and_never_by_a_lookup(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "store.db"
    store = LocalBackend(path)
    assert store.sweeps() == []
    for lookup in (lambda: store.sweep("abc"), lambda: store.runs("abc"), lambda: store.run("r")):
        with pytest.raises(SweepNotFoundError, match=f"no local store at {path}"):
            lookup()
    with pytest.raises(SweepNotFoundError, match="'abc'"):
        store.set_state("abc", SweepState.PAUSED)
    assert not path.exists() and not path.parent.exists()
    store.create({"method": "random", "parameters": {}})
    assert path.exists()


def test_workers_run_this_store_s_worker_loop(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    assert store.location == f"local store {store.path}"
    assert store.worker_argv("abc", "host-w1") == [
        sys.executable,
        "-m",
        "wbsweep.worker",
        str(store.path),
        "abc",
        "host-w1",
    ]
    assert store.worker_stagger == 0
    assert store.queue is store
    assert store.resolve("abc") == "abc" and store.sweep_url("abc") is None
    assert store.trial_env("abc", "run1") == {
        "WBSWEEP_STORE": str(store.path),
        "WBSWEEP_SWEEP_ID": "abc",
        "WANDB_RUN_ID": "run1",
    }
    assert store.work_dir("abc") == str(tmp_path / "sweep-abc")


def test_agent_command_names_the_store_only_when_it_is_not_the_default(tmp_path: Path) -> None:
    assert LocalBackend().agent_command("abc") == ["wbsweep", "agent", "abc"]
    assert LocalBackend(default_store_path()).agent_command("abc") == ["wbsweep", "agent", "abc"]
    other = tmp_path / "elsewhere.db"
    assert LocalBackend(other).agent_command("abc") == [
        "wbsweep",
        "agent",
        "abc",
        "--store",
        str(other),
    ]
    assert open_backend("local", store="rel.db").agent_command("x")[-1] == str(
        Path("rel.db").absolute()
    )


def test_only_rank_0_of_a_local_worker_s_trial_reports_to_the_store(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    sweep_id = store.create({"method": "random", "parameters": {}})
    env = store.trial_env(sweep_id, "run1")  # what a local worker gives its trial
    for rank in (None, "0"):
        queue = queue_from_env(env if rank is None else {**env, "RANK": rank})
        assert isinstance(queue, LocalBackend) and queue.path == store.path
    assert queue_from_env({**env, "RANK": "1"}) is None
    assert queue_from_env({}) is None
    # A `wandb agent`'s trial where WBSWEEP_STORE is set for other commands.
    wandb_trial = {"WBSWEEP_STORE": str(store.path), "WANDB_SWEEP_ID": "abc", "WANDB_RUN_ID": "r"}
    assert queue_from_env(wandb_trial) is None
    # ... and no store is made for it where none was.
    elsewhere = tmp_path / "none" / "s.db"
    assert queue_from_env({**wandb_trial, "WBSWEEP_STORE": str(elsewhere)}) is None
    assert not elsewhere.parent.exists()
    # A trial launched by hand for a local sweep names it as W&B would.
    by_hand = {"WBSWEEP_STORE": str(store.path), "WANDB_SWEEP_ID": sweep_id}
    assert isinstance(queue_from_env(by_hand), LocalBackend)


def _finish_runs_forever(path: str, sweep_id: str, log: str) -> None:
    store = LocalBackend(path)
    with open(log, "a") as out:
        while (run := store.claim_next(sweep_id, "victim")) is not None:
            store.record_history(run.id, 1, {"loss": 0.5})
            store.record_result(run.id, 0.5, {"eval_loss": 0.5})
            store.finish_run(run.id, RunEnd(0))
            out.write(run.id + "\n")  # only once the store said it is finished
            out.flush()


def _lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def test_sigkill_in_the_middle_of_writes_keeps_the_store_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = LocalBackend(path)
    sweep_id = store.create(
        {
            "method": "random",
            "metric": {"name": "loss", "goal": "minimize"},
            "parameters": {"lr": {"distribution": "uniform", "min": 0.0, "max": 1.0}},
        }
    )
    log = tmp_path / "finished.txt"
    ctx = multiprocessing.get_context("spawn")
    for delay in (0.0, 0.05, 0.2):
        before = _lines(log)
        victim = ctx.Process(target=_finish_runs_forever, args=(str(path), sweep_id, str(log)))
        victim.start()
        # Once it has finished a run it writes without a pause: kill it in the middle.
        deadline = time.monotonic() + 120
        while _lines(log) == before and victim.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(30)
        assert _lines(log) > before, "the writer finished no run before it was killed"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reported = set(log.read_text().split())
    finished = {run.id for run in store.runs(sweep_id) if run.state is RunState.FINISHED}
    assert reported and reported <= finished  # no run the store called finished was lost
    # The store still works: the killed writers' last runs are stale, not corrupt.
    assert store.claim_next(sweep_id, "after") is not None
