"""The embedded local backend: one SQLite file, no account, no network.

Every worker process on the machine opens the same file. Each state change is
one short ``BEGIN IMMEDIATE`` transaction, so claiming the next run (read the
runs so far, ask the ``sweeps`` engine, insert the new run) is atomic across
processes: two workers never get the same run and ``run_cap`` is exact. Reads
are snapshot reads in WAL mode and never wait for a writer (see
:mod:`wbsweep.backends._sqlite`).

SQLite locking is not safe over network filesystems; several machines means
the W&B backend.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
import string
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wbsweep.backends._engine import next_params
from wbsweep.backends._sqlite import SqliteFile
from wbsweep.backends.base import Backend, RunQueue, RunRecord, RunState, SweepRecord, SweepState
from wbsweep.errors import StoreError, SweepNotFoundError, SweepStateError, UsageError
from wbsweep.values import plain_metrics

__all__ = ["DEFAULT_STORE", "STORE_ENV", "SWEEP_ID_ENV", "LocalBackend", "default_store_path"]

DEFAULT_STORE = Path(".wbsweep") / "store.db"
STORE_ENV = "WBSWEEP_STORE"
#: Set for a trial a local worker started (with ``STORE_ENV``): it reports to the store.
SWEEP_ID_ENV = "WBSWEEP_SWEEP_ID"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$WBSWEEP_STORE``, else ``.wbsweep/store.db`` under the working directory."""
    source = os.environ if environ is None else environ
    return Path(source.get(STORE_ENV) or DEFAULT_STORE).absolute()


def _new_id(length: int = 8) -> str:
    # W&B run and sweep ids look like this: short, lowercase, url-safe.
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


class LocalBackend(Backend, RunQueue):
    """Sweeps and runs in one SQLite file; safe for many processes on one machine.

    It is its own :class:`RunQueue`: workers claim and record runs here.
    """

    name = "local"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).absolute() if path is not None else default_store_path()
        self._db = SqliteFile(self.path)

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
        sweep_id = _new_id()
        with self._db.transaction(write=True) as db:
            db.execute(
                "INSERT INTO sweeps (id, config, state, sweep_file, created_at) VALUES (?,?,?,?,?)",
                (sweep_id, text, SweepState.RUNNING.value, sweep_file, time.time()),
            )
        return sweep_id

    def sweep(self, sweep_id: str) -> SweepRecord:
        with self._db.transaction() as db:
            return _sweep(db, sweep_id)

    def runs(self, sweep_id: str) -> list[RunRecord]:
        with self._db.transaction() as db:
            _sweep(db, sweep_id)
            return _runs(db, sweep_id)

    def run(self, run_id: str) -> RunRecord:
        """One run by id.

        Raises:
            StoreError: No such run.
        """
        with self._db.transaction() as db:
            return _run_record(self._run_row(db, run_id))

    def sweeps(self) -> list[SweepRecord]:
        """Every sweep in this store, oldest first."""
        with self._db.transaction() as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created_at").fetchall()
        return [_sweep_record(row) for row in rows]

    def set_state(self, sweep_id: str, state: SweepState) -> None:
        wanted = _sweep_state(state)
        with self._db.transaction(write=True) as db:
            current = _sweep(db, sweep_id).state
            if current.terminal and wanted != current:
                raise SweepStateError(
                    f"sweep {sweep_id} is {current.value.lower()} and cannot change"
                )
            db.execute("UPDATE sweeps SET state = ? WHERE id = ?", (wanted.value, sweep_id))

    def worker_argv(self, sweep_id: str, name: str) -> list[str]:
        return [sys.executable, "-m", "wbsweep.worker", str(self.path), sweep_id, name]

    def agent_command(self, sweep_id: str) -> list[str]:
        argv = ["wbsweep", "agent", sweep_id]
        if self.path.resolve() != default_store_path().resolve():
            argv += ["--store", str(self.path)]
        return argv

    # -- the RunQueue contract ------------------------------------------------------

    def claim_next(self, sweep_id: str, worker: str) -> RunRecord | None:
        with self._db.transaction(write=True) as db:
            sweep = _sweep(db, sweep_id)
            if sweep.state != SweepState.RUNNING:
                return None
            runs = _runs(db, sweep_id)
            if sweep.run_cap is not None and len(runs) >= sweep.run_cap:
                return None
            params = next_params(sweep, runs, _histories(db, "sweep_id", sweep_id))
            if params is None:
                return None
            now = time.time()
            run_id = _new_id()
            db.execute(
                "INSERT INTO runs (id, sweep_id, seq, state, params, worker, created_at,"
                " claimed_at, heartbeat_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, sweep_id, len(runs), RunState.RUNNING.value, json.dumps(params), worker)
                + (now, now, now),
            )
            return _run_record(self._run_row(db, run_id))

    def sweep_state(self, sweep_id: str) -> SweepState:
        with self._db.transaction() as db:
            return _sweep(db, sweep_id).state

    def heartbeat(self, run_id: str) -> None:
        self._update_live_run(run_id, "heartbeat_at = ?", (time.time(),))

    def record_started(self, run_id: str) -> None:
        self._update_live_run(run_id, "started_at = COALESCE(started_at, ?)", (time.time(),))

    def record_history(self, run_id: str, step: int, metrics: dict[str, Any]) -> None:
        with self._db.transaction(write=True) as db:
            if self._run_row(db, run_id)["state"] in _TERMINAL:
                return
            db.execute(
                "INSERT INTO history (run_id, step, metrics, at) VALUES (?,?,?,?)"
                " ON CONFLICT (run_id, step) DO UPDATE SET metrics = excluded.metrics,"
                " at = excluded.at",
                (run_id, int(step), json.dumps(plain_metrics(_without_step(metrics))), time.time()),
            )

    def history(self, run_id: str) -> list[dict[str, Any]]:
        with self._db.transaction() as db:
            self._run_row(db, run_id)
            return _histories(db, "id", run_id).get(run_id, [])

    def record_result(self, run_id: str, objective: float, metrics: dict[str, Any]) -> None:
        value = float(objective)
        self._update_live_run(
            run_id,
            "objective = ?, metrics = ?",
            (value if math.isfinite(value) else None, json.dumps(plain_metrics(metrics))),
        )

    def finish_run(self, run_id: str, *, exit_code: int | None, stopped: bool = False) -> RunState:
        with self._db.transaction(write=True) as db:
            current = RunState(self._run_row(db, run_id)["state"])
            if current.terminal:
                return current
            if stopped:
                state = RunState.STOPPED
            elif exit_code == 0:
                state = RunState.FINISHED
            elif exit_code is None or exit_code < 0 or exit_code >= 128:
                state = RunState.CRASHED
            else:
                state = RunState.FAILED
            db.execute(
                "UPDATE runs SET state = ?, exit_code = ?, finished_at = ? WHERE id = ?",
                (state.value, exit_code, time.time(), run_id),
            )
            return state

    def maybe_finish_sweep(self, sweep_id: str) -> bool:
        with self._db.transaction(write=True) as db:
            sweep = _sweep(db, sweep_id)
            if sweep.state != SweepState.RUNNING:
                return sweep.state.terminal
            runs = _runs(db, sweep_id)
            if any(not run.state.terminal for run in runs):
                return False
            over = sweep.run_cap is not None and len(runs) >= sweep.run_cap
            if not over and sweep.config.get("method") == "grid":
                histories = _histories(db, "sweep_id", sweep_id)
                over = next_params(sweep, runs, histories) is None
            if over:
                db.execute(
                    "UPDATE sweeps SET state = ? WHERE id = ?",
                    (SweepState.FINISHED.value, sweep_id),
                )
            return over

    def trial_env(self, sweep_id: str, run_id: str) -> dict[str, str]:
        return {
            STORE_ENV: str(self.path),
            SWEEP_ID_ENV: sweep_id,
            "WANDB_SWEEP_ID": sweep_id,
            "WANDB_RUN_ID": run_id,
        }

    def work_dir(self, sweep_id: str) -> str:
        return str(self.path.parent / f"sweep-{sweep_id}")

    # -- rows -----------------------------------------------------------------------

    def _run_row(self, db: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"store {self.path}: no run {run_id!r}")
        return row

    def _update_live_run(self, run_id: str, assignments: str, values: tuple[Any, ...]) -> None:
        """Set columns of a run that has not ended; a terminal run never changes again."""
        with self._db.transaction(write=True) as db:
            if self._run_row(db, run_id)["state"] in _TERMINAL:
                return
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id))


_TERMINAL = frozenset(state.value for state in RunState if state.terminal)


def _sweep_state(state: SweepState | str) -> SweepState:
    try:
        return SweepState(state)
    except ValueError:
        expected = ", ".join(s.value for s in SweepState)
        raise UsageError(f"unknown sweep state {state!r}; expected one of {expected}") from None


def _sweep(db: sqlite3.Connection, sweep_id: str) -> SweepRecord:
    row = db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
    if row is None:
        raise SweepNotFoundError(f"no sweep {sweep_id!r} in the local store")
    return _sweep_record(row)


def _runs(db: sqlite3.Connection, sweep_id: str) -> list[RunRecord]:
    rows = db.execute("SELECT * FROM runs WHERE sweep_id = ? ORDER BY seq", (sweep_id,))
    return [_run_record(row) for row in rows]


def _histories(db: sqlite3.Connection, where: str, value: str) -> dict[str, list[dict[str, Any]]]:
    """Reported histories by run, each by step: ``{"_step": step, **metrics}``."""
    rows = db.execute(
        "SELECT history.run_id, history.step, history.metrics FROM history"
        f" JOIN runs ON runs.id = history.run_id WHERE runs.{where} = ?"
        " ORDER BY history.run_id, history.step",
        (value,),
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for run_id, step, metrics in rows:
        out.setdefault(run_id, []).append({"_step": step, **json.loads(metrics)})
    return out


def _sweep_record(row: sqlite3.Row) -> SweepRecord:
    return SweepRecord(
        id=row["id"],
        config=json.loads(row["config"]),
        state=SweepState(row["state"]),
        sweep_file=row["sweep_file"],
        created_at=row["created_at"],
    )


def _run_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        sweep_id=row["sweep_id"],
        state=RunState(row["state"]),
        params=json.loads(row["params"]),
        objective=row["objective"],
        metrics=json.loads(row["metrics"]),
        exit_code=row["exit_code"],
        worker=row["worker"],
        created_at=row["created_at"],
        claimed_at=row["claimed_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        heartbeat_at=row["heartbeat_at"],
    )


def _without_step(metrics: Mapping[str, Any]) -> dict[str, Any]:
    # The step is the row's key; a metric named ``_step`` must not shadow it.
    return {k: v for k, v in metrics.items() if k != "_step"}
