"""The local store's SQLite plumbing: one file, its migrations and its transactions.

Every access goes through :meth:`SqliteFile.transaction`, which owns the
transaction and turns driver errors into :class:`~wbsweep.errors.StoreError`.

* A *read* is a deferred ``BEGIN``: in WAL mode it reads a snapshot and never
  waits for a writer, so ``wbsweep status`` and a worker's pause poll answer
  while another process claims a run.
* A *write* is ``BEGIN IMMEDIATE``: it takes the write lock before reading, so
  read-decide-insert (claiming a run) is atomic across processes. Writes wait
  up to :data:`BUSY_TIMEOUT` seconds for each other; they are all short.

Migrations are an ordered list of small functions; each runs once, in a write
transaction, and is recorded in the ``migrations`` table. Opening a store that
is up to date takes no write lock.

Beside the transactions, :meth:`SqliteFile.turn` is an advisory lock on a file
next to the store, for work between two transactions that processes should do
one at a time (choosing the next run outside the write lock); it never stands
in for a transaction's own checks.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from wbsweep.errors import NoStoreError, StoreError

__all__ = ["BUSY_TIMEOUT", "MIGRATIONS", "Migration", "SqliteFile"]

#: Seconds a write waits for another process's write to end.
BUSY_TIMEOUT = 60.0

try:  # POSIX; where there is none, :meth:`SqliteFile.turn` never waits
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

Migration = Callable[[sqlite3.Connection], None]
_MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY, at REAL)"


def _migration_1(db: sqlite3.Connection) -> None:
    """Sweeps and their runs."""
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


def _migration_2(db: sqlite3.Connection) -> None:
    """Heartbeats, and each run's evaluation history (one row per step)."""
    db.execute("ALTER TABLE runs ADD COLUMN heartbeat_at REAL")
    db.execute(
        """CREATE TABLE history (
            run_id TEXT NOT NULL REFERENCES runs(id),
            step INTEGER NOT NULL,
            metrics TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (run_id, step)
        )"""
    )


def _migration_3(db: sqlite3.Connection) -> None:
    """Reruns of crashed runs, and why a run failed."""
    db.execute("ALTER TABLE runs ADD COLUMN retry_of TEXT REFERENCES runs(id)")
    db.execute("ALTER TABLE runs ADD COLUMN reason TEXT")


def _migration_4(db: sqlite3.Connection) -> None:
    """How each trial ran (ranks, mixed precision, an agent's override), as JSON."""
    db.execute("ALTER TABLE runs ADD COLUMN ran_as TEXT")


def _migration_5(db: sqlite3.Connection) -> None:
    """Where each running trial is (step of total, latest evaluation), as JSON."""
    db.execute("ALTER TABLE runs ADD COLUMN progress TEXT")


#: Ordered; migration ``n`` is ``MIGRATIONS[n - 1]``. Append, never edit or reorder.
MIGRATIONS: list[Migration] = [_migration_1, _migration_2, _migration_3, _migration_4, _migration_5]


class SqliteFile:
    """One SQLite file, migrated on first use; a new connection per transaction.

    A connection per transaction keeps an instance safe to use after ``fork``
    and never holds a snapshot or lock between two calls.
    """

    def __init__(self, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = path
        self.migrations = list(migrations)
        self._migrated = False

    @contextlib.contextmanager
    def transaction(
        self, *, write: bool = False, create: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """One transaction: a snapshot read, or (``write``) a ``BEGIN IMMEDIATE`` write.

        Commits when the block ends, rolls back when it raises. ``sqlite3``
        errors become ``StoreError``; other exceptions pass through unchanged.
        Only a ``create`` transaction makes the file: a lookup in a store that
        does not exist raises ``NoStoreError`` and leaves nothing behind.
        """
        if not create and not self.path.exists():
            raise NoStoreError(
                f"there is no local store at {self.path} (create a sweep there first, or "
                "point --store or WBSWEEP_STORE at the store that holds it)"
            )
        db = self._connect()
        try:
            if not self._migrated:
                self._migrate(db)
            with self._begun(db, "BEGIN IMMEDIATE" if write else "BEGIN"):
                yield db
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise StoreError(f"{self.path} is not a wbsweep store ({exc})") from exc
            raise StoreError(f"store {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        finally:
            db.close()

    @contextlib.contextmanager
    def turn(self, name: str, timeout: float = BUSY_TIMEOUT) -> Iterator[bool]:
        """This process's turn at ``name``: an exclusive advisory lock on ``<store>-<name>``.

        Yields whether the turn was had: ``False`` after ``timeout`` seconds of
        waiting (a process that holds it hangs) or where there is no ``fcntl``;
        the caller then goes on without it, so what it writes must be checked
        in its transaction anyway. The kernel ends a turn whose process dies.
        """
        if fcntl is None:
            yield False
            return
        try:
            fd = os.open(f"{self.path}-{name}", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield False  # an unwritable directory: the store's own writes will say so
            return
        try:
            yield _flock(fd, timeout)
        finally:
            os.close(fd)  # closing the file ends the turn

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        db.row_factory = sqlite3.Row
        return db

    @staticmethod
    @contextlib.contextmanager
    def _begun(db: sqlite3.Connection, begin: str) -> Iterator[None]:
        db.execute(begin)
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _migrate(self, db: sqlite3.Connection) -> None:
        # The common case, a store already up to date, is a plain read: opening
        # one must not wait behind a writer (``wbsweep status`` during a claim).
        with self._begun(db, "BEGIN"):
            pending = self._pending(db)
            wal = db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        if pending or not wal:
            db.execute("PRAGMA journal_mode = WAL")
            with self._begun(db, "BEGIN IMMEDIATE"):
                db.execute(_MIGRATIONS_TABLE)
                # Another process may have migrated since the read above.
                for number in self._pending(db):
                    self.migrations[number - 1](db)
                    db.execute("INSERT INTO migrations VALUES (?, ?)", (number, time.time()))
        self._migrated = True

    def _pending(self, db: sqlite3.Connection) -> list[int]:
        """Numbers of the migrations this file has not had yet, in order."""
        numbers = range(1, len(self.migrations) + 1)
        table = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
        ).fetchone()
        if table is None:
            return list(numbers)
        done = {row[0] for row in db.execute("SELECT id FROM migrations")}
        if done and max(done) > len(self.migrations):
            raise StoreError(
                f"store {self.path} was written by a newer wbsweep (schema {max(done)}; this "
                f"one knows up to {len(self.migrations)}): upgrade wbsweep to use it"
            )
        return [n for n in numbers if n not in done]


def _flock(fd: int, timeout: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, polling until ``timeout``; whether it was taken."""
    deadline, pause = time.monotonic() + timeout, 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            # Short first waits: a turn is usually one engine call long.
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
