"""How the local store hands out the next run: :class:`Claims`, mixed into ``LocalBackend``.

A claim's decision is made in one ``BEGIN IMMEDIATE`` transaction: record the
runs whose worker went silent as crashed, then resume a preempted run, rerun a
crashed run's params, stop at ``run_cap``, or insert the ``sweeps`` engine's
choice. So two workers never get the same run and ``run_cap`` is exact.

Where the engine is slow (bayes fits a model over every run), the claim
chooses *ahead*: it reads a snapshot, asks the engine with no lock held, then,
in the short write transaction, takes that choice only if no run was added
since the snapshot (runs are only ever added, by claims), else it chooses
again, and at last inside the lock. Claimers that choose ahead take turns at
it (:meth:`SqliteFile.turn`), so their choices do not go stale on each other,
while heartbeats and results never wait for the engine. A random draw reads no
runs, so it is always made ahead and never goes stale. Grid's engine is quick:
it chooses inside the lock.

Each backend instance keeps what it has read of a sweep
(:class:`~wbsweep.backends._rows.SeenRuns`, :class:`~wbsweep.backends._engine.EngineRuns`),
so a claim reads and converts only the runs that changed, however long the sweep.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import secrets
import sqlite3
import string
import threading
import time
from pathlib import Path
from typing import Any

from wbsweep.backends import _liveness as liveness
from wbsweep.backends._engine import EngineRuns, next_params, reads_history, reads_runs
from wbsweep.backends._rows import Histories, SeenRuns, run_record, sweep_row
from wbsweep.backends._sqlite import SqliteFile
from wbsweep.backends.records import DEFAULT_MAX_RETRIES, RunRecord, SweepRecord
from wbsweep.states import RunState, SweepState

__all__ = ["Claims", "new_id"]

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id(length: int = 8) -> str:
    """A new run or sweep id: short, lowercase, url-safe, as W&B's look."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclasses.dataclass
class _Known:
    """What a backend instance keeps of one sweep between transactions."""

    #: The sweep as first read: its config never changes (its state may).
    sweep: SweepRecord
    seen: SeenRuns
    engine: EngineRuns
    #: Whether its next run is chosen before the claim takes the write lock.
    ahead: bool


@dataclasses.dataclass(frozen=True)
class _Ahead:
    """A choice made before the write lock: ``params`` (``None``: none left) over ``runs`` runs.

    ``runs`` is ``None`` for a choice that reads no runs (a random draw): it never goes stale.
    """

    params: dict[str, Any] | None
    runs: int | None


#: A claim's choice made ahead went stale: a run was added since its snapshot.
_STALE: Any = object()


@dataclasses.dataclass(frozen=True)
class _View:
    """A sweep's runs as stored and as seen now, and where the few that decide a claim are.

    A claim is decided by the live runs (resume one preempted; a silent worker's
    run reads as crashed) and the crashed runs and reruns (rerun one, count
    toward ``run_cap``): the rest have ended for good, so the checks below
    look at those few runs only, however long the sweep.
    """

    stored: list[RunRecord]
    runs: list[RunRecord]
    live: list[int]
    linked: list[int]

    def _deciding(self) -> list[RunRecord]:
        return [self.runs[n] for n in sorted({*self.live, *self.linked})]

    def preempted(self) -> RunRecord | None:
        """The oldest preempted run: it runs again before any other."""
        preempted = (self.runs[n] for n in self.live if self.runs[n].state == RunState.PREEMPTED)
        return next(preempted, None)

    def retry(self, max_retries: int) -> RunRecord | None:
        """The crashed run whose params run again next (:func:`liveness.next_retry`)."""
        return liveness.next_retry(self._deciding(), max_retries)

    def at_cap(self, sweep: SweepRecord) -> bool:
        """Whether the runs that count (:func:`liveness.counted`) reached ``run_cap``."""
        if sweep.run_cap is None:
            return False
        deciding = self._deciding()  # every rerun and every run rerun is among them
        return liveness.counted(deciding) + len(self.runs) - len(deciding) >= sweep.run_cap

    def going(self) -> bool:
        """Whether a run is not over yet."""
        return any(not self.runs[n].state.terminal for n in self.live)


class Claims(abc.ABC):
    """``claim_next`` and ``maybe_finish_sweep`` of the local store's run queue."""

    #: Methods whose next run is chosen with no lock held (their engine is slow), so
    #: heartbeats and results from other workers do not wait while it thinks.
    choose_ahead: frozenset[str] = frozenset({"bayes"})
    #: How many times a claim chooses ahead before it chooses inside the write lock.
    ahead_tries: int = 2
    #: Whether claims that choose ahead take turns (:meth:`SqliteFile.turn`) at it.
    take_turns: bool = True

    path: Path
    heartbeat_timeout: float
    _db: SqliteFile

    def __init__(self) -> None:
        self._known: dict[str, _Known] = {}
        # What is kept of each sweep is read and replaced by one claim at a time,
        # even where a run loop claims its next run from a side thread.
        self._claiming = threading.Lock()
        #: Choices made ahead that went stale (a run was added meanwhile): contention.
        self.stale_choices = 0

    # -- what the store provides ----------------------------------------------------

    @abc.abstractmethod
    def _tx(
        self, *, write: bool = False, about: str
    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A transaction on the store (see ``LocalBackend._tx``)."""

    @abc.abstractmethod
    def _as_seen(self, run: RunRecord, now: float) -> RunRecord:
        """A run as a reader sees it now: crashed once its worker stopped heartbeating."""

    @abc.abstractmethod
    def _lost(self, run: RunRecord) -> str:
        """Why a run whose worker went silent crashed, in one line."""

    @abc.abstractmethod
    def _run_row(self, db: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        """One run's row (``StoreError`` when there is none)."""

    # -- the claim ------------------------------------------------------------------

    def claim_next(
        self, sweep_id: str, worker: str, *, max_retries: int = DEFAULT_MAX_RETRIES
    ) -> RunRecord | None:
        with self._claiming:
            return self._claim_next(sweep_id, worker, max_retries)

    def maybe_finish_sweep(self, sweep_id: str, *, max_retries: int = DEFAULT_MAX_RETRIES) -> bool:
        with self._claiming:
            return self._maybe_finish_sweep(sweep_id, max_retries)

    def _claim_next(self, sweep_id: str, worker: str, max_retries: int) -> RunRecord | None:
        known = self._known.get(sweep_id) or self._learn(sweep_id)
        if not known.ahead:
            return self._claim(sweep_id, worker, max_retries, None)
        if not reads_runs(known.sweep.config):  # a draw that no other claim can make stale
            return self._claim(sweep_id, worker, max_retries, _Ahead(self._draw(known), None))
        # Claimers take turns at choosing: they would all choose over the same runs,
        # and all but one choice would go stale.
        with self._db.turn("claim") if self.take_turns else contextlib.nullcontext():
            for _ in range(self.ahead_tries):
                ahead = self._choose_ahead(known, max_retries)
                if ahead is None:  # as things stand, the claim will not ask the engine
                    break
                claimed = self._claim(sweep_id, worker, max_retries, ahead)
                if claimed is not _STALE:
                    return claimed
                self.stale_choices += 1
            return self._claim(sweep_id, worker, max_retries, None)

    def _maybe_finish_sweep(self, sweep_id: str, max_retries: int) -> bool:
        with self._tx(write=True, about=f"sweep {sweep_id!r}") as db:
            sweep = sweep_row(db, sweep_id, self.path)
            if sweep.state != SweepState.RUNNING:
                return sweep.state.terminal
            now = time.time()
            known, view = self._reaped(db, sweep, now)
            if view.going() or view.retry(max_retries) is not None:
                return False
            over = view.at_cap(sweep)
            if not over and sweep.config.get("method") == "grid":
                over = self._next_params(known, view.stored, known.seen.histories, now) is None
            if over:
                db.execute(
                    "UPDATE sweeps SET state = ? WHERE id = ?",
                    (SweepState.FINISHED.value, sweep_id),
                )
            return over

    def _claim(
        self, sweep_id: str, worker: str, max_retries: int, ahead: _Ahead | None
    ) -> RunRecord | None:
        """The claim's write transaction: ``ahead`` if still good, else the engine's choice now.

        Returns :data:`_STALE` when ``ahead`` went stale (its snapshot missed a run).
        """
        with self._tx(write=True, about=f"sweep {sweep_id!r}") as db:
            sweep = sweep_row(db, sweep_id, self.path)
            if sweep.state != SweepState.RUNNING:
                return None
            now = time.time()
            known, view = self._reaped(db, sweep, now)
            resumed = view.preempted()
            if resumed is not None:
                db.execute(
                    "UPDATE runs SET state = ?, worker = ?, claimed_at = ?, heartbeat_at = ?,"
                    " exit_code = NULL, reason = NULL, finished_at = NULL WHERE id = ?",
                    (RunState.RUNNING.value, worker, now, now, resumed.id),
                )
                return run_record(self._run_row(db, resumed.id))
            retry = view.retry(max_retries)
            if retry is not None:
                params: dict[str, Any] | None = retry.params
            elif view.at_cap(sweep):
                return None
            elif ahead is not None:
                if ahead.runs is not None and ahead.runs != len(view.runs):
                    return _STALE
                params = ahead.params
            else:
                params = self._next_params(known, view.stored, known.seen.histories, now)
            if params is None:
                return None
            run_id = new_id()
            db.execute(
                "INSERT INTO runs (id, sweep_id, seq, state, params, worker, created_at,"
                " claimed_at, heartbeat_at, retry_of) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, sweep_id, len(view.runs), RunState.RUNNING.value)
                + (json.dumps(params), worker)
                + (now, now, now, retry.id if retry is not None else None),
            )
            return run_record(self._run_row(db, run_id))

    # -- choosing -------------------------------------------------------------------

    def _learn(self, sweep_id: str) -> _Known:
        """Read the sweep once: its config decides how its runs are chosen."""
        with self._tx(about=f"sweep {sweep_id!r}") as db:
            return self._known_for(sweep_row(db, sweep_id, self.path))

    def _known_for(self, sweep: SweepRecord) -> _Known:
        known = self._known.get(sweep.id)
        if known is None:
            config = sweep.config
            ahead = not reads_runs(config) or config.get("method") in self.choose_ahead
            seen = SeenRuns(sweep.id, with_history=reads_history(config))
            known = self._known[sweep.id] = _Known(sweep, seen, EngineRuns(), ahead)
        return known

    def _draw(self, known: _Known) -> dict[str, Any] | None:
        """The engine's choice where it reads no runs (a random draw)."""
        return next_params(known.sweep, [])

    def _choose_ahead(self, known: _Known, max_retries: int) -> _Ahead | None:
        """The engine's choice over a snapshot, with no lock held.

        ``None`` when the snapshot shows that the claim will not ask the engine
        (the sweep is not running, a run resumes or reruns, ``run_cap``).
        """
        with self._tx(about=f"sweep {known.sweep.id!r}") as db:  # a snapshot read: no lock
            sweep = sweep_row(db, known.sweep.id, self.path)
            if sweep.state != SweepState.RUNNING:
                return None
            now = time.time()
            view = self._view(known, known.seen.read(db), now)
            histories = known.seen.histories
        if view.preempted() is not None or view.retry(max_retries) is not None:
            return None
        if view.at_cap(sweep):
            return None
        return _Ahead(self._next_params(known, view.stored, histories, now), len(view.runs))

    def _next_params(
        self, known: _Known, stored: list[RunRecord], histories: Histories, now: float
    ) -> dict[str, Any] | None:
        """The engine's choice over the runs as stored, a silent worker's run read as crashed."""
        return next_params(
            known.sweep,
            stored,
            histories,
            known=known.engine,
            shown=lambda run: self._as_seen(run, now),
        )

    # -- liveness -------------------------------------------------------------------

    def _reaped(
        self, db: sqlite3.Connection, sweep: SweepRecord, now: float
    ) -> tuple[_Known, _View]:
        """Record every stale run as crashed (in a write); the sweep's runs, stored and as seen.

        *Stored* is as read before this write (what :class:`SeenRuns` keeps must
        be committed data); *as seen* shows the runs just recorded crashed.
        """
        known = self._known_for(sweep)
        stored = known.seen.read(db)
        for n in known.seen.live:
            if liveness.is_stale(stored[n], now, self.heartbeat_timeout):
                db.execute(
                    "UPDATE runs SET state = ?, finished_at = ?, reason = ? WHERE id = ?",
                    (RunState.CRASHED.value, now, self._lost(stored[n]), stored[n].id),
                )
        return known, self._view(known, stored, now)

    def _view(self, known: _Known, stored: list[RunRecord], now: float) -> _View:
        """``stored`` (just read) as a reader sees it now: only live runs can read otherwise."""
        runs = list(stored)
        for n in known.seen.live:
            runs[n] = self._as_seen(stored[n], now)
        return _View(stored, runs, known.seen.live, known.seen.linked)
