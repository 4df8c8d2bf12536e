"""The embedded local backend: one SQLite file, no account, no network.

Concurrency model: every worker process opens the same file. Each state change
is one short ``BEGIN IMMEDIATE`` transaction, so claiming the next run (read
the runs so far, ask the ``sweeps`` engine, insert the new run) is atomic
across processes: two workers never get the same run and ``run_cap`` is exact.
WAL mode lets readers (``wbsweep status``) run beside writers.

SQLite locking is not safe over network filesystems; several machines means
the W&B backend.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sqlite3
import string
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wbsweep.backends import base
from wbsweep.errors import StoreError, SweepNotFoundError, WbsweepError
from wbsweep.space import to_plain

DEFAULT_STORE = Path(".wbsweep") / "store.db"
STORE_ENV = "WBSWEEP_STORE"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def default_store_path() -> Path:
    """``$WBSWEEP_STORE``, else ``.wbsweep/store.db`` under the working directory."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE).absolute()


def _sweeps_engine() -> Any:
    """The ``sweeps`` package, imported late (it pulls in scikit-learn and scipy)."""
    import sweeps

    return sweeps


def _new_id(length: int = 8) -> str:
    # W&B run and sweep ids look like this: short, lowercase, url-safe.
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _migration_1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE sweeps (
            id TEXT PRIMARY KEY,
            config TEXT NOT NULL,
            state TEXT NOT NULL,
            sweep_file TEXT,
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            sweep_id TEXT NOT NULL REFERENCES sweeps(id),
            seq INTEGER NOT NULL,
            state TEXT NOT NULL,
            params TEXT NOT NULL,
            objective REAL,
            metrics TEXT NOT NULL DEFAULT '{}',
            exit_code INTEGER,
            worker TEXT,
            created_at REAL NOT NULL,
            claimed_at REAL,
            started_at REAL,
            finished_at REAL,
            UNIQUE (sweep_id, seq)
        )"""
    )


# Ordered; each runs once and is recorded in the `migrations` table.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1]


class LocalBackend(base.Backend):
    """Sweeps and runs in one SQLite file; safe for many processes on one machine."""

    name = "local"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).absolute() if path is not None else default_store_path()
        self._migrated = False

    # -- plumbing -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 60000")
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; driver errors become ``StoreError``."""
        db = self._connect()
        try:
            if not self._migrated:
                self._migrate(db)
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        finally:
            db.close()

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY, at REAL)")
            done = {row[0] for row in db.execute("SELECT id FROM migrations")}
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number not in done:
                    migration(db)
                    db.execute("INSERT INTO migrations VALUES (?, ?)", (number, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._migrated = True

    # -- the Backend contract -------------------------------------------------------

    def create(self, config: dict[str, Any], *, sweep_file: str | None = None) -> str:
        sweep_id = _new_id()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO sweeps (id, config, state, sweep_file, created_at) VALUES (?,?,?,?,?)",
                (sweep_id, json.dumps(config), base.SWEEP_RUNNING, sweep_file, time.time()),
            )
        return sweep_id

    def sweep(self, sweep_id: str) -> base.SweepRecord:
        with self._transaction() as db:
            return self._sweep(db, sweep_id)

    def runs(self, sweep_id: str) -> list[base.RunRecord]:
        with self._transaction() as db:
            self._sweep(db, sweep_id)
            return self._runs(db, sweep_id)

    def run(self, run_id: str) -> base.RunRecord:
        """One run by id."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"store {self.path}: no run {run_id}")
        return _run_record(row)

    def sweeps(self) -> list[base.SweepRecord]:
        """Every sweep in this store, oldest first."""
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created_at").fetchall()
        return [_sweep_record(row) for row in rows]

    def set_state(self, sweep_id: str, state: str) -> None:
        allowed = (base.SWEEP_RUNNING, base.SWEEP_PAUSED, base.SWEEP_FINISHED, base.SWEEP_CANCELED)
        if state not in allowed:
            raise WbsweepError(f"unknown sweep state {state!r}; expected one of {allowed}")
        with self._transaction() as db:
            current = self._sweep(db, sweep_id).state
            if current in (base.SWEEP_FINISHED, base.SWEEP_CANCELED) and state != current:
                raise WbsweepError(f"sweep {sweep_id} is {current.lower()} and cannot change")
            db.execute("UPDATE sweeps SET state = ? WHERE id = ?", (state, sweep_id))

    # -- what workers and trials call -------------------------------------------------

    def claim_next(self, sweep_id: str, worker: str) -> base.RunRecord | None:
        """Atomically choose the sweep's next run, mark it running for ``worker``.

        Returns ``None`` when the sweep is not running, ``run_cap`` is reached or
        the search space is exhausted (grid). The choice is the ``sweeps``
        engine's, over every run so far, exactly as the W&B server makes it.
        """
        sweeps = _sweeps_engine()
        with self._transaction() as db:
            sweep = self._sweep(db, sweep_id)
            if sweep.state != base.SWEEP_RUNNING:
                return None
            runs = self._runs(db, sweep_id)
            if sweep.run_cap is not None and len(runs) >= sweep.run_cap:
                return None
            engine_runs = [_engine_run(run, sweep.metric_name) for run in runs]
            try:
                suggestion = sweeps.next_run(_engine_config(sweep.config), engine_runs)
            except Exception as exc:  # the engine raises plain ValueErrors
                raise WbsweepError(f"sweep {sweep_id}: the search engine failed: {exc}") from exc
            if suggestion is None:
                return None
            # The engine answers in numpy scalars; the store and params file hold JSON.
            params = to_plain({k: v["value"] for k, v in suggestion.config.items() if "value" in v})
            now = time.time()
            run_id = _new_id()
            db.execute(
                "INSERT INTO runs (id, sweep_id, seq, state, params, worker, created_at,"
                " claimed_at) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, sweep_id, len(runs), base.RUNNING, json.dumps(params), worker, now, now),
            )
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            return _run_record(row)

    def record_started(self, run_id: str) -> None:
        """The trial took its first training step."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET started_at = COALESCE(started_at, ?) WHERE id = ?",
                (time.time(), run_id),
            )

    def record_result(self, run_id: str, objective: float, metrics: dict[str, Any]) -> None:
        """The trial's objective and final metrics (rank 0, after evaluation)."""
        value = float(objective)
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET objective = ?, metrics = ? WHERE id = ?",
                (value if math.isfinite(value) else None, json.dumps(_plain(metrics)), run_id),
            )

    def finish_run(self, run_id: str, *, exit_code: int | None, stopped: bool = False) -> str:
        """Close a run after its process ended; returns the state it ended in.

        Exit code 0 is ``finished`` (as on W&B; a run without an objective
        then simply never wins ``best``); a trial we stopped on purpose is
        ``stopped``; killed by a signal is ``crashed``; any other non-zero exit
        is ``failed``.
        """
        with self._transaction() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"store {self.path}: no run {run_id}")
            if row["state"] in base.TERMINAL_STATES:
                return str(row["state"])
            if stopped:
                state = base.STOPPED
            elif exit_code == 0:
                state = base.FINISHED
            elif exit_code is None or exit_code < 0 or exit_code >= 128:
                state = base.CRASHED
            else:
                state = base.FAILED
            db.execute(
                "UPDATE runs SET state = ?, exit_code = ?, finished_at = ? WHERE id = ?",
                (state, exit_code, time.time(), run_id),
            )
            return state

    def maybe_finish_sweep(self, sweep_id: str) -> bool:
        """Mark the sweep finished once no run can start and none is running."""
        sweeps = _sweeps_engine()

        with self._transaction() as db:
            sweep = self._sweep(db, sweep_id)
            if sweep.state != base.SWEEP_RUNNING:
                return sweep.state in (base.SWEEP_FINISHED, base.SWEEP_CANCELED)
            runs = self._runs(db, sweep_id)
            if any(run.state in (base.PENDING, base.RUNNING) for run in runs):
                return False
            capped = sweep.run_cap is not None and len(runs) >= sweep.run_cap
            if not capped and sweep.config.get("method") == "grid":
                engine_runs = [_engine_run(run, sweep.metric_name) for run in runs]
                capped = sweeps.next_run(_engine_config(sweep.config), engine_runs) is None
            if capped:
                db.execute(
                    "UPDATE sweeps SET state = ? WHERE id = ?", (base.SWEEP_FINISHED, sweep_id)
                )
            return capped

    # -- rows ----------------------------------------------------------------------

    @staticmethod
    def _sweep(db: sqlite3.Connection, sweep_id: str) -> base.SweepRecord:
        row = db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise SweepNotFoundError(f"no sweep {sweep_id!r} in the local store")
        return _sweep_record(row)

    @staticmethod
    def _runs(db: sqlite3.Connection, sweep_id: str) -> list[base.RunRecord]:
        rows = db.execute("SELECT * FROM runs WHERE sweep_id = ? ORDER BY seq", (sweep_id,))
        return [_run_record(row) for row in rows]


def _sweep_record(row: sqlite3.Row) -> base.SweepRecord:
    return base.SweepRecord(
        id=row["id"],
        config=json.loads(row["config"]),
        state=row["state"],
        sweep_file=row["sweep_file"],
        created_at=row["created_at"],
    )


def _run_record(row: sqlite3.Row) -> base.RunRecord:
    return base.RunRecord(
        id=row["id"],
        sweep_id=row["sweep_id"],
        state=row["state"],
        params=json.loads(row["params"]),
        objective=row["objective"],
        metrics=json.loads(row["metrics"]),
        exit_code=row["exit_code"],
        worker=row["worker"],
        created_at=row["created_at"],
        claimed_at=row["claimed_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


# Our run states in the sweeps engine's words.
_ENGINE_STATE = {
    base.PENDING: "pending",
    base.RUNNING: "running",
    base.FINISHED: "finished",
    base.FAILED: "failed",
    base.CRASHED: "crashed",
    base.STOPPED: "killed",
}


def _engine_config(config: dict[str, Any]) -> dict[str, Any]:
    # The engine reads method, metric and parameters; the rest is for agents.
    return {k: config[k] for k in ("method", "metric", "parameters") if k in config}


def _engine_run(run: base.RunRecord, metric: str) -> Any:
    sweeps = _sweeps_engine()
    summary = {metric: run.objective} if run.objective is not None else {}
    return sweeps.SweepRun(
        name=run.id,
        state=_ENGINE_STATE[run.state],
        config={k: {"value": v} for k, v in run.params.items()},
        summary_metrics=summary,
        history=[summary] if summary else [],
    )


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as JSON-safe Python values (numpy and torch scalars unwrapped)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[str(key)] = value
    return out
