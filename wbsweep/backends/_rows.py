"""The local store's tables read as records: sweeps, runs and their histories.

Plain functions over an open ``sqlite3`` connection, inside the caller's
transaction (:class:`wbsweep.backends._sqlite.SqliteFile`), and
:class:`SeenRuns`, which keeps a sweep's runs between transactions so a claim
reads only what changed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from wbsweep.backends.records import RunRecord, SweepRecord
from wbsweep.errors import SweepNotFoundError
from wbsweep.states import RunState, SweepState

__all__ = [
    "Histories",
    "SeenRuns",
    "histories",
    "run_record",
    "run_rows",
    "sweep_record",
    "sweep_row",
]

#: Reported histories by run id: ``[{"_step": step, **metrics}, ...]``.
Histories = dict[str, list[dict[str, Any]]]

#: The most run ids one ``IN (...)`` list holds (SQLite's own limit is higher).
_IN_LIMIT = 500
_LIVE = frozenset(state.value for state in RunState if not state.terminal)


def sweep_row(db: sqlite3.Connection, sweep_id: str, store: object) -> SweepRecord:
    """The sweep; ``store`` (its path) names where it was looked for when it is not there."""
    row = db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
    if row is None:
        raise SweepNotFoundError(f"no sweep {sweep_id!r} in the local store {store}")
    return sweep_record(row)


def run_rows(db: sqlite3.Connection, sweep_id: str) -> list[RunRecord]:
    rows = db.execute("SELECT * FROM runs WHERE sweep_id = ? ORDER BY seq", (sweep_id,))
    return [run_record(row) for row in rows]


def histories(db: sqlite3.Connection, where: str, value: str) -> Histories:
    """Reported histories by run, each by step: ``{"_step": step, **metrics}``."""
    rows = db.execute(
        "SELECT history.run_id, history.step, history.metrics FROM history"
        f" JOIN runs ON runs.id = history.run_id WHERE runs.{where} = ?"
        " ORDER BY history.run_id, history.step",
        (value,),
    )
    return _by_run(rows)


def _histories_of(db: sqlite3.Connection, run_ids: list[str]) -> Histories:
    out: Histories = {}
    for start in range(0, len(run_ids), _IN_LIMIT):
        chunk = run_ids[start : start + _IN_LIMIT]
        rows = db.execute(
            "SELECT run_id, step, metrics FROM history"
            f" WHERE run_id IN ({','.join('?' * len(chunk))}) ORDER BY run_id, step",
            chunk,
        )
        out.update(_by_run(rows))
    return out


def _by_run(rows: Iterable[tuple[str, int, str]]) -> Histories:
    out: Histories = {}
    for run_id, step, metrics in rows:
        out.setdefault(run_id, []).append({"_step": step, **json.loads(metrics)})
    return out


class SeenRuns:
    """One sweep's runs (and, with ``with_history``, their histories) as last read here.

    Runs are only ever added, each with the next ``seq``, and a run in a terminal
    state never changes again (nor does its history). So :meth:`read` fetches
    only the rows added since the last read and the rows that were not terminal
    yet, and parses nothing else again: a claim in a sweep of thousands of runs
    reads a handful of rows.

    What is kept is always committed data, as long as :meth:`read` comes before
    any write in its transaction (a rolled back write must leave nothing here).
    Used by one thread at a time (the backend's claims take turns at it).
    """

    def __init__(self, sweep_id: str, *, with_history: bool = False) -> None:
        self.sweep_id = sweep_id
        self.with_history = with_history
        self._runs: list[RunRecord] = []  # by seq: ``_runs[n]`` has seq ``n``
        self._live: list[int] = []  # where the runs not yet terminal are in ``_runs``
        self._linked: list[int] = []  # where the crashed runs and the reruns are
        self._histories: Histories = {}

    @property
    def live(self) -> list[int]:
        """Where the runs not yet terminal are in the list the last :meth:`read` returned."""
        return self._live

    @property
    def linked(self) -> list[int]:
        """Where the crashed runs and the reruns (``retry_of``) are, in that list.

        With :attr:`live`, every run that decides a rerun or the ``run_cap``
        count (see :mod:`wbsweep.backends._liveness`): both are for good, once so.
        """
        return self._linked

    @property
    def histories(self) -> Histories:
        """The histories of the runs the last :meth:`read` returned (with ``with_history``)."""
        return self._histories

    def read(self, db: sqlite3.Connection) -> list[RunRecord]:
        """Every run of the sweep now, oldest first, as :func:`run_rows` reads them."""
        known = self._runs
        if not known or len(self._live) > _IN_LIMIT:
            return self._read_all(db)
        rows = db.execute(
            "SELECT * FROM runs WHERE sweep_id = ? AND seq >= ? ORDER BY seq",
            (self.sweep_id, len(known)),
        ).fetchall()
        if self._live:
            ids = [known[n].id for n in self._live]
            marks = ",".join("?" * len(ids))
            rows += db.execute(f"SELECT * FROM runs WHERE id IN ({marks})", ids).fetchall()
        runs = list(known)
        for row in rows:
            seq = row["seq"]
            if seq < len(runs):
                runs[seq] = run_record(row)
            elif seq == len(runs):
                runs.append(run_record(row))
            else:  # not numbered 0, 1, 2... (wbsweep never writes that): read it all
                return self._read_all(db)
        changed = sorted({*self._live, *range(len(known), len(runs))})
        self._keep(db, runs, changed, [row["id"] for row in rows])
        return runs

    def _read_all(self, db: sqlite3.Connection) -> list[RunRecord]:
        rows = db.execute(
            "SELECT * FROM runs WHERE sweep_id = ? ORDER BY seq", (self.sweep_id,)
        ).fetchall()
        runs = [run_record(row) for row in rows]
        self._runs, self._linked = [], []
        self._keep(db, runs, range(len(runs)), None)
        if any(row["seq"] != n for n, row in enumerate(rows)):
            # Kept runs must sit at their seq; a store numbered otherwise is read whole each
            # time (what it returns still goes with ``live`` and ``linked``).
            self._runs = []
        return runs

    def _keep(
        self,
        db: sqlite3.Connection,
        runs: list[RunRecord],
        changed: Iterable[int],
        fetched: list[str] | None,
    ) -> None:
        """Keep ``runs``; refresh the histories of ``fetched`` ids (``None``: every run's)."""
        if self.with_history:
            if fetched is None or not self._runs:
                new = histories(db, "sweep_id", self.sweep_id)
            else:
                new = {**self._histories}
                for run_id in fetched:
                    new.pop(run_id, None)
                new.update(_histories_of(db, fetched))
            self._histories = new
        changed = list(changed)
        self._live = [n for n in changed if runs[n].state.value in _LIVE]
        linked = {n for n in changed if runs[n].retry_of or runs[n].state == RunState.CRASHED}
        self._linked = sorted(linked.union(self._linked))
        self._runs = runs


def sweep_record(row: sqlite3.Row) -> SweepRecord:
    return SweepRecord(
        id=row["id"],
        config=json.loads(row["config"]),
        state=SweepState(row["state"]),
        sweep_file=row["sweep_file"],
        created_at=row["created_at"],
    )


def run_record(row: sqlite3.Row) -> RunRecord:
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
        retry_of=row["retry_of"],
        reason=row["reason"],
        ran_as=json.loads(row["ran_as"]) if row["ran_as"] else {},
        progress=json.loads(row["progress"]) if row["progress"] else {},
    )
