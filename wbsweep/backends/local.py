"""The embedded local backend: one SQLite file, no account, no network.

Every worker process on the machine opens the same file. Each state change is
one short ``BEGIN IMMEDIATE`` transaction, so claiming the next run (read the
runs so far, ask the ``sweeps`` engine, insert the new run) is atomic across
processes: two workers never get the same run and ``run_cap`` is exact. Reads
are snapshot reads in WAL mode and never wait for a writer (see
:mod:`wbsweep.backends._sqlite`).

How a claim chooses, and how it keeps the engine's slow thinking out of the
write lock, is in :mod:`wbsweep.backends._claim`.

SQLite locking is not safe over network filesystems; several machines means
the W&B backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from wbsweep.backends import _liveness as liveness
from wbsweep.backends._claim import Claims, new_id
from wbsweep.backends._engine import runs_to_stop
from wbsweep.backends._rows import histories, run_record, run_rows, sweep_record, sweep_row
from wbsweep.backends._sqlite import SqliteFile
from wbsweep.backends.base import (
    Backend,
    RunEnd,
    RunLabel,
    RunQueue,
    RunRecord,
    RunState,
    SweepRecord,
    SweepState,
)
from wbsweep.errors import NoStoreError, StoreError, SweepStateError, UsageError
from wbsweep.values import one_line, plain_metrics, to_plain

__all__ = ["DEFAULT_STORE", "STORE_ENV", "SWEEP_ID_ENV", "LocalBackend", "default_store_path"]

DEFAULT_STORE = Path(".wbsweep") / "store.db"
STORE_ENV = "WBSWEEP_STORE"
#: Set for a trial a local worker started (with ``STORE_ENV``): it reports to the store.
SWEEP_ID_ENV = "WBSWEEP_SWEEP_ID"


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$WBSWEEP_STORE``, else ``.wbsweep/store.db`` under the working directory."""
    source = os.environ if environ is None else environ
    return Path(source.get(STORE_ENV) or DEFAULT_STORE).absolute()


class LocalBackend(Claims, Backend, RunQueue):
    """Sweeps and runs in one SQLite file; safe for many processes on one machine.

    It is its own :class:`RunQueue`: workers claim and record runs here
    (``claim_next`` and ``maybe_finish_sweep`` come from :class:`Claims`).
    """

    name = "local"

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, heartbeat_timeout: float | None = None
    ) -> None:
        super().__init__()
        self.path = Path(path).absolute() if path is not None else default_store_path()
        self._db = SqliteFile(self.path)
        self.heartbeat_timeout = heartbeat_timeout or liveness.heartbeat_timeout()

    # -- the Backend contract -------------------------------------------------------

    @property
    def location(self) -> str:
        return f"local store {self.path}"

    @property
    def queue(self) -> RunQueue:
        return self

    def create(self, config: dict[str, Any], *, sweep_file: str | None = None) -> str:
        try:
            text = json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"the sweep config is not JSON data: {exc}") from None
        sweep_id = new_id()
        with self._db.transaction(write=True, create=True) as db:
            db.execute(
                "INSERT INTO sweeps (id, config, state, sweep_file, created_at) VALUES (?,?,?,?,?)",
                (sweep_id, text, SweepState.RUNNING.value, sweep_file, time.time()),
            )
        return sweep_id

    def sweep(self, sweep_id: str) -> SweepRecord:
        with self._tx(about=f"sweep {sweep_id!r}") as db:
            return sweep_row(db, sweep_id, self.path)

    def runs(self, sweep_id: str) -> list[RunRecord]:
        with self._tx(about=f"sweep {sweep_id!r}") as db:
            sweep_row(db, sweep_id, self.path)
            return [self._as_seen(run, time.time()) for run in run_rows(db, sweep_id)]

    def run(self, run_id: str) -> RunRecord:
        """One run by id.

        Raises:
            StoreError: No such run.
        """
        with self._tx(about=f"run {run_id!r}") as db:
            return self._as_seen(run_record(self._run_row(db, run_id)), time.time())

    def sweeps(self) -> list[SweepRecord]:
        """Every sweep in this store, oldest first (none when there is no store yet)."""
        if not self.path.exists():
            return []
        with self._db.transaction() as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created_at").fetchall()
        return [sweep_record(row) for row in rows]

    def set_state(self, sweep_id: str, state: SweepState) -> None:
        wanted = _sweep_state(state)
        with self._tx(write=True, about=f"sweep {sweep_id!r}") as db:
            current = sweep_row(db, sweep_id, self.path).state
            if current.terminal and wanted != current:
                raise SweepStateError(
                    f"sweep {sweep_id} is {current.value.lower()} and cannot change"
                )
            db.execute("UPDATE sweeps SET state = ? WHERE id = ?", (wanted.value, sweep_id))

    def worker_argv(
        self, sweep_id: str, name: str, count: int | None = None, *, warm: bool = False
    ) -> list[str]:
        argv = [sys.executable, "-m", "wbsweep.worker", str(self.path), sweep_id, name]
        return argv + ["--warm"] if warm else argv

    def run_label(self, sweep_id: str, run_id: str) -> RunLabel:
        # No W&B sweep holds these runs: the group keeps them together on the dashboard.
        label = super().run_label(sweep_id, run_id)
        return dataclasses.replace(label, group=self.sweep(sweep_id).name)

    def agent_command(self, sweep_id: str) -> list[str]:
        argv = ["wbsweep", "agent", sweep_id]
        if self.path.resolve() != default_store_path().resolve():
            argv += ["--store", str(self.path)]
        return argv

    # -- the RunQueue contract ------------------------------------------------------

    def sweep_state(self, sweep_id: str) -> SweepState:
        with self._tx(about=f"sweep {sweep_id!r}") as db:
            return sweep_row(db, sweep_id, self.path).state

    def should_stop(self, run_id: str) -> bool:
        with self._tx(about=f"run {run_id!r}") as db:
            run = run_record(self._run_row(db, run_id))
            sweep = sweep_row(db, run.sweep_id, self.path)
            if run.state != RunState.RUNNING or not sweep.config.get("early_terminate"):
                return False
            runs = run_rows(db, sweep.id)
            return run_id in runs_to_stop(sweep, runs, histories(db, "sweep_id", sweep.id))

    def heartbeat(self, run_id: str) -> None:
        self._update_live_run(run_id, "heartbeat_at = ?", (time.time(),))

    def record_started(self, run_id: str, ran_as: dict[str, Any] | None = None) -> None:
        self._update_live_run(
            run_id,
            "started_at = COALESCE(started_at, ?), ran_as = COALESCE(?, ran_as)",
            (time.time(), json.dumps(ran_as) if ran_as is not None else None),
        )

    def record_history(self, run_id: str, step: int, metrics: dict[str, Any]) -> None:
        with self._tx(write=True, about=f"run {run_id!r}") as db:
            if self._run_row(db, run_id)["state"] in _TERMINAL:
                return
            db.execute(
                "INSERT INTO history (run_id, step, metrics, at) VALUES (?,?,?,?)"
                " ON CONFLICT (run_id, step) DO UPDATE SET metrics = excluded.metrics,"
                " at = excluded.at",
                (run_id, int(step), json.dumps(plain_metrics(_without_step(metrics))), time.time()),
            )

    def history(self, run_id: str) -> list[dict[str, Any]]:
        with self._tx(about=f"run {run_id!r}") as db:
            self._run_row(db, run_id)
            return histories(db, "id", run_id).get(run_id, [])

    def record_result(self, run_id: str, objective: float, metrics: dict[str, Any]) -> None:
        value = float(objective)
        self._update_live_run(
            run_id,
            "objective = ?, metrics = ?",
            (value if math.isfinite(value) else None, json.dumps(plain_metrics(metrics))),
        )

    def record_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        self._update_live_run(run_id, "progress = ?", (json.dumps(to_plain(dict(progress))),))

    def finish_run(self, run_id: str, end: RunEnd) -> RunState:
        with self._tx(write=True, about=f"run {run_id!r}") as db:
            current = RunState(self._run_row(db, run_id)["state"])
            if current.terminal:
                return current
            code = end.exit_code
            if end.preempted and code != 0:
                state = RunState.PREEMPTED
            elif end.stopped:
                state = RunState.STOPPED
            elif code == 0:
                state = RunState.FINISHED
            elif code is None or code < 0 or code >= 128:
                state = RunState.CRASHED
            else:
                state = RunState.FAILED
            kept = one_line(end.reason, limit=500) if end.reason and state in _FAILURES else None
            db.execute(
                "UPDATE runs SET state = ?, exit_code = ?, finished_at = ?, reason = ?"
                " WHERE id = ?",
                (state.value, code, time.time(), kept, run_id),
            )
            return state

    def trial_env(self, sweep_id: str, run_id: str) -> dict[str, str]:
        # Not WANDB_SWEEP_ID: the SDK would record this id, which no W&B server knows, as
        # the run's sweep, and W&B refuses to take the run (`wandb sync`, online mode).
        return {STORE_ENV: str(self.path), SWEEP_ID_ENV: sweep_id, "WANDB_RUN_ID": run_id}

    def work_dir(self, sweep_id: str) -> str:
        return str(self.path.parent / f"sweep-{sweep_id}")

    @contextlib.contextmanager
    def _tx(self, *, write: bool = False, about: str) -> Iterator[sqlite3.Connection]:
        """A transaction on this store; with no store yet, ``about`` was not found in it."""
        try:
            with self._db.transaction(write=write) as db:
                yield db
        except NoStoreError as exc:
            raise NoStoreError(f"no {about}: {exc}") from None

    # -- liveness -------------------------------------------------------------------

    def _as_seen(self, run: RunRecord, now: float) -> RunRecord:
        """A run as a reader sees it: crashed once its worker stopped heartbeating."""
        if not liveness.is_stale(run, now, self.heartbeat_timeout):
            return run
        return dataclasses.replace(run, state=RunState.CRASHED, reason=self._lost(run))

    def _lost(self, run: RunRecord) -> str:
        return f"worker {run.worker} sent no heartbeat for {self.heartbeat_timeout:g} s"

    # -- rows -----------------------------------------------------------------------

    def _run_row(self, db: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"store {self.path}: no run {run_id!r}")
        return row

    def _update_live_run(self, run_id: str, assignments: str, values: tuple[Any, ...]) -> None:
        """Set columns of a run that has not ended; a terminal run never changes again."""
        with self._tx(write=True, about=f"run {run_id!r}") as db:
            if self._run_row(db, run_id)["state"] in _TERMINAL:
                return
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id))


_TERMINAL = frozenset(state.value for state in RunState if state.terminal)
_FAILURES = (RunState.FAILED, RunState.CRASHED)


def _sweep_state(state: SweepState | str) -> SweepState:
    try:
        return SweepState(state)
    except ValueError:
        expected = ", ".join(s.value for s in SweepState)
        raise UsageError(f"unknown sweep state {state!r}; expected one of {expected}") from None


def _without_step(metrics: Mapping[str, Any]) -> dict[str, Any]:
    # The step is the row's key; a metric named ``_step`` must not shadow it.
    return {k: v for k, v in metrics.items() if k != "_step"}
