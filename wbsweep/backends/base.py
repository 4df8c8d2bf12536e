"""The backend contract: where a sweep lives, who hands out its runs, how a node joins it.

Two interfaces, as the two backends split the work:

* :class:`Backend` — every backend. It registers a sweep, reads it, its
  runs and their history (``run_history``), changes its state, says where it
  lives, and says how a node's workers start (``worker_argv``) and how one
  process runs trials in itself (``drive``). The best candidates are written
  once here, on top of ``runs``.
* :class:`RunQueue` — where wbsweep itself hands out runs (the local store):
  claim, heartbeat, report start, history and result, finish. On W&B the
  server and ``wandb agent`` own the queue, so :attr:`Backend.queue` is ``None``.

Guarantees every backend gives (``tests/backends`` checks each one on every
backend):

* ``create`` either registers the whole sweep or nothing, and returns an id
  that ``sweep``, ``runs`` and ``set_state`` accept on any machine that can
  reach the backend.
* ``runs`` returns every run of the sweep made by any worker on any machine,
  oldest first; a run's ``params`` hold only the sweep's own parameters.
* A run in a terminal state (:attr:`RunState.terminal`) never changes again.
* A finished or canceled sweep cannot change state again.
* Reads never wait behind a writer for long: ``sweep`` and ``runs`` answer
  while workers write.
* Errors are :mod:`wbsweep.errors` classes with one-line messages; a backend
  never lets a driver error (SQLite, HTTP) through.

Both interfaces are safe to use from several processes at once; an instance is
not shared between threads.
"""

from __future__ import annotations

import abc
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wbsweep.backends._liveness import DEFAULT_HEARTBEAT_TIMEOUT, heartbeat_every
from wbsweep.backends.records import (
    DEFAULT_MAX_FAILURES,
    DEFAULT_MAX_RETRIES,
    ClaimedRun,
    DriveOptions,
    InProcessTrial,
    Reporter,
    RunEnd,
    RunLabel,
    RunRecord,
    SweepRecord,
)
from wbsweep.errors import UsageError
from wbsweep.states import RunState, SweepState

__all__ = [
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_MAX_RETRIES",
    "Backend",
    "ClaimedRun",
    "DriveOptions",
    "InProcessTrial",
    "Reporter",
    "RunEnd",
    "RunLabel",
    "RunQueue",
    "RunRecord",
    "RunState",
    "SweepRecord",
    "SweepState",
]


class RunQueue(abc.ABC):
    """Hands out a sweep's runs and records their lives, where wbsweep owns that.

    Guarantees:

    * ``claim_next`` is atomic across processes: two workers never get the same
      run, ``run_cap`` is exact, and a grid point is handed out once.
    * The choice of the next run is the ``sweeps`` engine's, over every run so
      far, as the W&B server makes it.
    * ``finish_run`` is the only way a run reaches a terminal state, and a
      second call leaves the first outcome in place.
    * Records of a run that does not exist raise ``StoreError``; reports about
      a run in a terminal state (a late heartbeat, result or history row) are
      ignored, so it never changes again.
    * ``sweep_state`` and ``history`` are plain reads: they never wait for a writer.
    * A ``running`` run whose worker sent no heartbeat for ``heartbeat_timeout``
      seconds is ``crashed``: every read shows it so at once, and the next
      claim or finish of the sweep records it. A crashed run's params run
      again (``retry_of`` names it) until a chain of reruns reaches
      ``max_retries``; a rerun crashed run does not count toward ``run_cap``.
    """

    #: Seconds without a heartbeat after which a running run counts as crashed.
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT

    @property
    def heartbeat_every(self) -> float:
        """How often a live worker should call :meth:`heartbeat` while its trial runs."""
        return heartbeat_every(self.heartbeat_timeout)

    @abc.abstractmethod
    def claim_next(
        self, sweep_id: str, worker: str, *, max_retries: int = DEFAULT_MAX_RETRIES
    ) -> RunRecord | None:
        """Choose the sweep's next run and mark it ``running`` for ``worker``.

        A preempted run comes first (the same run, to resume), then a crashed
        run's params (as a rerun), then the engine's choice.

        Returns:
            The run, or ``None`` when the sweep is not running, ``run_cap`` is
            reached or the space is exhausted (grid).

        Raises:
            SweepNotFoundError: No such sweep.
            WbsweepError: The search engine could not choose.
        """

    @abc.abstractmethod
    def run(self, run_id: str) -> RunRecord:
        """One run by id (a plain read).

        Raises:
            StoreError: No such run.
        """

    @abc.abstractmethod
    def sweep_state(self, sweep_id: str) -> SweepState:
        """The sweep's state now: a plain read that never waits behind a writer.

        Raises:
            SweepNotFoundError: No such sweep.
        """

    @abc.abstractmethod
    def should_stop(self, run_id: str) -> bool:
        """Whether the sweep's early termination (hyperband) stops this running run now.

        A plain read over every run's reported history; ``False`` when the
        sweep has no ``early_terminate`` or the run is not running.
        """

    @abc.abstractmethod
    def heartbeat(self, run_id: str) -> None:
        """The run's worker is alive now (``RunRecord.heartbeat_at``)."""

    @abc.abstractmethod
    def record_started(self, run_id: str, ran_as: dict[str, Any] | None = None) -> None:
        """The trial took its first training step (the first call's time is kept).

        ``ran_as`` is how it runs (``RunRecord.ran_as``); the latest call's is kept.
        """

    @abc.abstractmethod
    def record_history(self, run_id: str, step: int, metrics: dict[str, Any]) -> None:
        """One evaluation's metrics at ``step``; a second report of a step replaces it."""

    @abc.abstractmethod
    def history(self, run_id: str) -> list[dict[str, Any]]:
        """Every evaluation reported, by step: ``{"_step": step, **metrics}``."""

    @abc.abstractmethod
    def record_result(self, run_id: str, objective: float, metrics: dict[str, Any]) -> None:
        """The objective (stored as ``None`` when not finite) and final metrics."""

    @abc.abstractmethod
    def record_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        """Where the running trial is (``RunRecord.progress``): the latest call's is kept.

        Rank 0 calls it every few seconds while it trains; one short write.
        """

    @abc.abstractmethod
    def finish_run(self, run_id: str, end: RunEnd) -> RunState:
        """Close a run after its trial ended; return the state it ended in.

        A preempted trial (its node is going away) is ``preempted``: the run is
        handed out again, under the same id, before any new run. A trial
        stopped on purpose is ``stopped``; exit code 0 is
        ``finished``; killed by a signal (``None``, negative, or 128 and above)
        is ``crashed``; any other non-zero exit is ``failed``. ``end.reason``
        (one line) is kept for a failed or crashed run. A run already in a
        terminal state keeps it, and that state is returned.
        """

    @abc.abstractmethod
    def maybe_finish_sweep(self, sweep_id: str, *, max_retries: int = DEFAULT_MAX_RETRIES) -> bool:
        """Mark the sweep finished once no run can start (a rerun included) and none is running.

        Returns:
            Whether the sweep is over (finished or canceled).
        """

    @abc.abstractmethod
    def trial_env(self, sweep_id: str, run_id: str) -> dict[str, str]:
        """Environment variables a trial process needs to report to this queue."""

    @abc.abstractmethod
    def work_dir(self, sweep_id: str) -> str:
        """A directory for the sweep's params files and trial logs (created on demand)."""

    def trial_log(self, sweep_id: str, run_id: str) -> str:
        """Where a worker writes the output of the run's trial process."""
        return os.path.join(self.work_dir(sweep_id), f"run-{run_id}.log")


class Backend(abc.ABC):
    """Where sweeps are registered and their runs recorded."""

    #: ``local`` or ``wandb``: what ``--backend`` calls it.
    name: str
    #: Seconds between starting two workers on a node (W&B: spread the first heartbeats).
    worker_stagger: float = 0.0
    #: Seconds between two reads of the sweep for the agent's live progress.
    progress_poll: float = 1.0

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where this backend's sweeps live, for messages: ``local store /x/store.db``."""

    @abc.abstractmethod
    def create(self, config: dict[str, Any], *, sweep_file: str | None = None) -> str:
        """Register a sweep from a complete, validated sweep config; return its id.

        The whole sweep is registered, or nothing (an error is raised).

        Raises:
            WbsweepError: The backend refused the config or could not be reached.
        """

    @abc.abstractmethod
    def sweep(self, sweep_id: str) -> SweepRecord:
        """The sweep.

        Raises:
            SweepNotFoundError: No such sweep.
        """

    @abc.abstractmethod
    def runs(self, sweep_id: str) -> list[RunRecord]:
        """Every run of the sweep from every worker on every machine, oldest first.

        Raises:
            SweepNotFoundError: No such sweep.
        """

    def watch(self, sweep_id: str) -> Callable[[], tuple[SweepRecord, list[RunRecord]]]:
        """A reader of the sweep and :meth:`runs`, for a display that reads them every few s.

        Each call reads both again. Backends where a read costs requests to a
        server keep, from one call to the next, what can no longer change.
        """
        return lambda: (self.sweep(sweep_id), self.runs(sweep_id))

    @abc.abstractmethod
    def set_state(self, sweep_id: str, state: SweepState) -> None:
        """Pause, resume, stop (finish: running trials complete) or cancel the sweep.

        Raises:
            SweepNotFoundError: No such sweep.
            SweepStateError: The sweep is finished or canceled and ``state`` differs.
        """

    @abc.abstractmethod
    def worker_argv(
        self, sweep_id: str, name: str, count: int | None = None, *, warm: bool = False
    ) -> list[str]:
        """The argv of one worker process on this node (``wandb agent ID`` on W&B).

        ``count`` caps the trials it runs (also in its environment, see
        :meth:`DriveOptions.env`); ``warm`` runs its trials in one long-lived
        process group (:mod:`wbsweep.warm`).
        """

    def keeper_argv(self, sweep_id: str) -> list[str] | None:
        """A process each node runs beside its workers to rerun crashed runs, if any.

        ``None`` where the workers do it themselves (the local store reruns a
        crashed run's params when a worker next claims).
        """
        return None

    def outlook(self, sweep_id: str) -> str:
        """For a node whose workers found nothing left: ``"run"``, ``"wait"`` or ``"done"``.

        ``"run"``: runs wait to be handed out again (preempted, or crashed and
        requeued by the keeper), so start the workers again. ``"wait"``: runs are
        still running elsewhere and may yet crash; ask again later. ``"done"``:
        leave. Backends whose workers wait for reruns themselves say ``"done"``.
        """
        return "done"

    def resolve(self, sweep_id: str) -> str:
        """The full id of a sweep given as the user wrote it (a bare id on W&B: add the path)."""
        return sweep_id

    def agent_command(self, sweep_id: str) -> list[str]:
        """The ``wbsweep agent`` argv a user runs on each node for this sweep."""
        return ["wbsweep", "agent", sweep_id]

    def sweep_url(self, sweep_id: str) -> str | None:
        """The sweep's page on a dashboard, where the backend has one."""
        return None

    def best_candidates(self, sweep_id: str) -> list[RunRecord]:
        """The runs that may be the best: finished, with a finite objective.

        Backends that can filter and order on the server override this; the
        order is not part of the contract (``wbsweep.best`` decides).

        Raises:
            SweepNotFoundError: No such sweep.
        """
        return [
            run
            for run in self.runs(sweep_id)
            if run.state == RunState.FINISHED and run.has_finite_objective
        ]

    def run_history(self, sweep_id: str, run_id: str) -> list[dict[str, Any]] | None:
        """The run's reported metrics by step: ``{"_step": step, **metrics}``, oldest first.

        ``_step`` is the trial's training step where the backend knows it.
        ``None`` where this backend keeps no per-step history; ``[]`` where the
        run reported none.

        Raises:
            SweepNotFoundError, StoreError: No such sweep or run.
        """
        queue = self.queue
        return None if queue is None else queue.history(run_id)

    def run_label(self, sweep_id: str, run_id: str) -> RunLabel:
        """How the run's W&B run reads: ``<sweep name>-<n>``, the backend and worker as tags.

        ``n`` is the run's place among the sweep's runs, oldest first (a run not
        listed yet comes next); the worker is the one recorded with the run,
        else this host.

        Raises:
            SweepNotFoundError: No such sweep.
        """
        runs = self.runs(sweep_id)
        worker = next((run.worker for run in runs if run.id == run_id and run.worker), None)
        return self._label_among(self.sweep(sweep_id), [run.id for run in runs], run_id, worker)

    def _label_among(
        self, sweep: SweepRecord, ids: Sequence[str], run_id: str, worker: str | None
    ) -> RunLabel:
        """:meth:`run_label` from the sweep and its runs' ids (oldest first), already read."""
        number = ids.index(run_id) + 1 if run_id in ids else len(ids) + 1
        return RunLabel(f"{sweep.name}-{number}", (self.name, worker or socket.gethostname()))

    def import_runs(
        self, sweep: SweepRecord, run_dirs: Mapping[str, Sequence[str]]
    ) -> tuple[str, int]:
        """Upload another backend's offline W&B runs here, in a sweep with ``sweep``'s config.

        ``run_dirs`` maps each run's id to its ``offline-run-*`` directories (a
        resumed run has several). Runs uploaded before are not uploaded again,
        and the sweep made for them the first time is reused.

        Returns:
            The sweep's id here and how many of the runs were uploaded now.

        Raises:
            UsageError: This backend keeps no W&B runs (only W&B does).
            WbsweepError: The upload or the sweep failed.
        """
        raise UsageError(f"the {self.name} backend does not take uploaded W&B runs")

    def sweeps(self) -> list[SweepRecord]:
        """Every sweep this backend holds where it looks (a store, a W&B project), oldest first.

        Raises:
            WbsweepError: The backend cannot be read.
        """
        raise UsageError(f"the {self.name} backend cannot list its sweeps")

    def log_dir(self, sweep_id: str) -> str:
        """Where this node keeps the sweep's logs: trial logs, and worker output under progress.

        The run queue's work directory; else ``sweep-<id>`` beside the default local store.
        """
        queue = self.queue
        if queue is not None:
            return queue.work_dir(sweep_id)
        from wbsweep.backends.local import default_store_path

        return str(default_store_path().parent / f"sweep-{_safe(sweep_id)}")

    def worker_log(self, sweep_id: str, worker: str) -> str:
        """Where a worker's own output goes when ``wbsweep agent`` shows live progress."""
        return os.path.join(self.log_dir(sweep_id), f"worker-{_safe(worker)}.log")

    def trial_logs(self, sweep_id: str, runs: list[RunRecord]) -> dict[str, str]:
        """Where each run's trial output was kept, for the runs that have a log here."""
        queue = self.queue
        if queue is None:
            return {}
        paths = {run.id: queue.trial_log(sweep_id, run.id) for run in runs}
        return {run_id: path for run_id, path in paths.items() if os.path.exists(path)}

    @property
    def queue(self) -> RunQueue | None:
        """The run queue, where wbsweep hands out runs; ``None`` where W&B's agent does."""
        return None

    def drive(self, sweep_id: str, trial: InProcessTrial, options: DriveOptions) -> None:
        """Run the sweep's trials in this process, one at a time, until none is left.

        ``trial`` is called once per run; a trial that raises is recorded as
        failed and the next one starts, until ``max_consecutive_failures``
        failed in a row. ``count`` caps the trials this call runs.

        Raises:
            SweepNotFoundError: No such sweep.
        """
        queue = self.queue
        if queue is None:  # pragma: no cover - a backend without a queue overrides drive
            raise NotImplementedError(f"{self.name} backend cannot run trials in-process")
        from wbsweep.runloop import RunLoop, in_process

        RunLoop(queue, sweep_id, in_process(queue, trial), options).run()


def _safe(name: str) -> str:
    """``name`` as one file name: ``entity/project/id`` becomes ``entity_project_id``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
