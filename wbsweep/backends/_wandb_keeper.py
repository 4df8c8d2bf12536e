"""Crashed runs of a W&B sweep run again: the keeper beside a node's ``wandb agent`` workers.

W&B marks a run ``crashed`` once its process stops talking, but never runs its
params again. The keeper, which ``wbsweep agent`` starts beside its W&B
workers, watches the sweep and requeues each crashed run through W&B's own
preemption path: it resumes the run, counts the requeue in the run's summary
(:data:`REQUEUES_KEY`), calls ``mark_preempting()`` and ends it with a non-zero
exit, so W&B hands the *same* run out again (same id, same params) to the next
idle agent on any node; the trial then goes on from the run's last checkpoint
when it left one.

A run counts as crashed when W&B says so and the run has not been heard from
for a keeper's beat, or when it is ``running`` and has sent nothing for
``WBSWEEP_HEARTBEAT_TIMEOUT`` seconds (a node lost with its agent: nobody is
left to tell W&B). A crashed run of a warm worker must be silent for that whole
timeout too: its worker's agent hands the run back at the end of its trial,
and W&B then calls it crashed while rank 0 still sends its last upload, for as
long as that upload takes. Each run is requeued at most
``WBSWEEP_MAX_RETRIES`` times (``--max-retries``). Two keepers that requeue
the same run at once requeue it once: W&B keys the requeue by run id.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence

from wbsweep.backends._liveness import heartbeat_every, heartbeat_timeout, is_stale
from wbsweep.backends._wandb_records import REQUEUES_KEY
from wbsweep.backends.records import DriveOptions, RunRecord
from wbsweep.errors import WbsweepError
from wbsweep.states import RunState

__all__ = ["keeper_argv", "node_outlook", "requeue", "to_requeue"]


def to_requeue(
    runs: Sequence[RunRecord], *, now: float, timeout: float, max_retries: int
) -> list[RunRecord]:
    """The runs to hand out again: crashed or silent for ``timeout`` s, under ``max_retries``.

    A crashed run that still sent something in the last :func:`heartbeat_every`
    seconds is still uploading: W&B corrects its state once the upload ends.
    A warm worker's run (``ran_as["warm"]``) is still uploading as long as it
    was heard from in the last ``timeout`` seconds: W&B calls it crashed as soon
    as the worker's agent takes its next run, while rank 0 finishes it beside.

    >>> from wbsweep.backends.records import RunRecord
    >>> crashed = RunRecord("a", "s", RunState.CRASHED, {}, requeues=0)
    >>> silent = RunRecord("b", "s", RunState.RUNNING, {}, heartbeat_at=1.0)
    >>> done = RunRecord("c", "s", RunState.CRASHED, {}, requeues=1)
    >>> talking = RunRecord("d", "s", RunState.CRASHED, {}, heartbeat_at=98.0)
    >>> warm = {"warm": True}
    >>> uploading = RunRecord("e", "s", RunState.CRASHED, {}, heartbeat_at=50.0, ran_as=warm)
    >>> lost = RunRecord("f", "s", RunState.CRASHED, {}, heartbeat_at=30.0, ran_as=warm)
    >>> runs = [crashed, silent, done, talking, uploading, lost]
    >>> [r.id for r in to_requeue(runs, now=100, timeout=60, max_retries=1)]
    ['a', 'b', 'f']
    """
    beat = heartbeat_every(timeout)

    def crashed(run: RunRecord) -> bool:
        quiet = timeout if run.ran_as.get("warm") else beat
        return run.state == RunState.CRASHED and now - (run.heartbeat_at or 0.0) > quiet

    return [
        run
        for run in runs
        if run.requeues < max_retries and (crashed(run) or is_stale(run, now, timeout))
    ]


def node_outlook(runs: Sequence[RunRecord], *, now: float, timeout: float, max_retries: int) -> str:
    """:meth:`Backend.outlook <wbsweep.backends.base.Backend.outlook>` on W&B, from the runs.

    ``"run"`` when a run waits to be handed out again (preempted, or one the
    keeper requeues now); ``"wait"`` while runs run, were handed out and not
    started yet, or crashed and may still be requeued (a node that left now
    would take its keeper along); else ``"done"``.

    >>> from wbsweep.backends.records import RunRecord
    >>> done = RunRecord("a", "s", RunState.FINISHED, {})
    >>> uploading = RunRecord("b", "s", RunState.CRASHED, {}, heartbeat_at=90.0,
    ...                       ran_as={"warm": True})
    >>> node_outlook([done], now=100, timeout=60, max_retries=1)
    'done'
    >>> node_outlook([done, uploading], now=100, timeout=60, max_retries=1)
    'wait'
    >>> node_outlook([done, uploading], now=200, timeout=60, max_retries=1)
    'run'
    >>> node_outlook([done, uploading], now=100, timeout=60, max_retries=0)
    'done'
    """
    if any(r.state == RunState.PREEMPTED for r in runs):
        return "run"
    if to_requeue(runs, now=now, timeout=timeout, max_retries=max_retries):
        return "run"
    live = any(
        r.state == RunState.RUNNING
        or (r.state == RunState.CRASHED and r.requeues < max_retries)
        # A run handed to an agent that never started it stays pending: not for ever.
        or (r.state == RunState.PENDING and now - (r.heartbeat_at or r.created_at or now) < timeout)
        for r in runs
    )
    return "wait" if live else "done"


def requeue(path: str, run: RunRecord) -> None:
    """Resume ``run`` of the sweep at ``path``, mark it preempting and end it: W&B requeues it."""
    import wandb

    entity, project, _ = path.split("/")
    # Not as this sweep's agent: a run id is kept only outside an agent's run.
    for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        os.environ.pop(name, None)
    resumed = wandb.init(
        entity=entity,
        project=project,
        id=run.id,
        resume="must",
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        reinit="finish_previous",
    )
    resumed.summary[REQUEUES_KEY] = run.requeues + 1
    resumed.mark_preempting()
    resumed.finish(exit_code=1)


def keeper_argv(path: str) -> list[str]:
    """The keeper's argv for the sweep at ``path`` (``entity/project/id``)."""
    return [sys.executable, "-m", "wbsweep.backends._wandb_keeper", path]


def main(argv: Sequence[str]) -> int:
    """Watch the sweep ``argv[0]`` until killed; one line per requeue on stderr."""
    from wbsweep.backends.wandb import WandbBackend

    (path,) = argv
    timeout = heartbeat_timeout()
    retries = DriveOptions.from_env("keeper", os.environ).max_retries
    backend = WandbBackend()
    while True:
        with contextlib.suppress(WbsweepError):  # W&B unreachable for a while: try again
            for run in to_requeue(
                backend.unsettled_runs(path), now=time.time(), timeout=timeout, max_retries=retries
            ):
                print(f"run {run.id} crashed: handing it out again", file=sys.stderr, flush=True)
                try:
                    requeue(path, run)
                except Exception as exc:  # one run that will not resume: the others still
                    print(f"could not requeue run {run.id}: {exc}", file=sys.stderr, flush=True)
        time.sleep(heartbeat_every(timeout))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
