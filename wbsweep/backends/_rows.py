"""The local store's tables read as records: sweeps, runs and their histories.

Plain functions over an open ``sqlite3`` connection, inside the caller's
transaction (:class:`wbsweep.backends._sqlite.SqliteFile`).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from wbsweep.backends.records import RunRecord, SweepRecord
from wbsweep.errors import SweepNotFoundError
from wbsweep.states import RunState, SweepState

__all__ = ["histories", "run_record", "run_rows", "sweep_record", "sweep_row"]


def sweep_row(db: sqlite3.Connection, sweep_id: str, store: object) -> SweepRecord:
    """The sweep; ``store`` (its path) names where it was looked for when it is not there."""
    row = db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
    if row is None:
        raise SweepNotFoundError(f"no sweep {sweep_id!r} in the local store {store}")
    return sweep_record(row)


def run_rows(db: sqlite3.Connection, sweep_id: str) -> list[RunRecord]:
    rows = db.execute("SELECT * FROM runs WHERE sweep_id = ? ORDER BY seq", (sweep_id,))
    return [run_record(row) for row in rows]


def histories(db: sqlite3.Connection, where: str, value: str) -> dict[str, list[dict[str, Any]]]:
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
    )
