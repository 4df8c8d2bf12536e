"""``wbsweep sync``: a local sweep's offline W&B runs onto W&B, in a W&B sweep of their own.

Trials of a local sweep log with ``wandb`` in offline mode, each to an
``offline-run-<time>-<run id>`` folder in ``wandb/`` under where it ran
(``$WANDB_DIR/wandb`` when that is set). This finds the folders of the sweep's
ended runs and hands them to the W&B backend (:meth:`Backend.import_runs`),
which uploads them with the real ``wandb sync`` and makes a W&B sweep with the
local sweep's config holding them. The runs went offline already named,
tagged and grouped under the sweep's name, with the params and effective
``TrainingArguments`` in their config and the objective in their summary.

>>> run_id_of("offline-run-20260101_120000-k3j9x0ab")
'k3j9x0ab'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wbsweep.backends.base import Backend
from wbsweep.errors import UsageError

__all__ = ["SyncResult", "find_offline_runs", "run_id_of", "search_dirs", "sync_sweep"]

_PREFIX = "offline-run-"


@dataclass(frozen=True)
class SyncResult:
    """What one sync did.

    Attributes:
        sweep: The W&B sweep that holds the runs (``entity/project/id``).
        url: Its page on the W&B app.
        runs: How many of the sweep's runs are on W&B now.
        uploaded: How many of the runs this sync uploaded (the others were before).
        skipped: Runs not synced: still running, or no offline run folder found.
    """

    sweep: str
    url: str | None
    runs: int
    uploaded: int
    skipped: int


def run_id_of(folder: str) -> str | None:
    """The run id of an ``offline-run-<date>_<time>-<id>`` folder name, else None."""
    if not folder.startswith(_PREFIX):
        return None
    head, _, run_id = folder.rpartition("-")
    return run_id if head and run_id else None


def search_dirs(
    given: Sequence[str], work_dir: str | None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """Where a sweep's offline runs may be: ``given``, else W&B's places for them.

    W&B's places: ``$WANDB_DIR/wandb``, ``./wandb``, and ``wandb/`` beside the
    store's folder (``wbsweep agent`` ran in the store's directory by default).
    A given folder may be the ``wandb/`` folder itself or the folder holding it.
    """
    environ = os.environ if environ is None else environ
    if given:
        roots = [Path(p) for p in given]
        for root in roots:
            if not root.is_dir():
                raise UsageError(f"--wandb-dir {str(root)!r} is not a directory")
        return [d for root in roots for d in (root, root / "wandb")]
    places = [Path.cwd() / "wandb"]
    if environ.get("WANDB_DIR"):
        places.insert(0, Path(environ["WANDB_DIR"]) / "wandb")
    if work_dir:
        places.append(Path(work_dir).parent.parent / "wandb")
    unique: list[Path] = []
    for place in places:
        if place.absolute() not in [p.absolute() for p in unique]:
            unique.append(place)
    return unique


def find_offline_runs(run_ids: Sequence[str], dirs: Sequence[Path]) -> dict[str, list[str]]:
    """Each run's ``offline-run-*`` folders in ``dirs`` (a resumed run has several)."""
    wanted = set(run_ids)
    found: dict[str, list[str]] = {}
    for place in dirs:
        if not place.is_dir():
            continue
        for folder in sorted(place.iterdir()):
            run_id = run_id_of(folder.name)
            if run_id in wanted and folder.is_dir() and any(folder.glob("*.wandb")):
                paths = found.setdefault(run_id, [])
                if str(folder.absolute()) not in paths:
                    paths.append(str(folder.absolute()))
    return found


def sync_sweep(
    source: Backend,
    sweep_id: str,
    target: Callable[[], Backend],
    *,
    wandb_dirs: Sequence[str] = (),
) -> SyncResult:
    """Upload the ended runs of ``source``'s sweep ``sweep_id`` to the backend ``target()``.

    ``target`` is called only once the runs are found, so a sweep with nothing
    to upload fails before any login or network.

    Raises:
        SweepNotFoundError: No such sweep in ``source``.
        UsageError: A W&B sweep path, or no offline run of the sweep was found.
        WandbLoginError: Not logged in to W&B, or the key was rejected.
        WbsweepError: The upload or the W&B sweep failed.
    """
    if "/" in sweep_id:
        raise UsageError(
            f"{sweep_id!r} is a W&B sweep: its runs are on W&B already "
            "(wbsweep sync uploads a local sweep's runs)"
        )
    record = source.sweep(sweep_id)
    runs = source.runs(sweep_id)
    ended = [run.id for run in runs if run.state.terminal]
    queue = source.queue
    dirs = search_dirs(wandb_dirs, queue.work_dir(sweep_id) if queue is not None else None)
    found = find_offline_runs(ended, dirs)
    if not found:
        where = ", ".join(str(d) for d in dirs)
        raise UsageError(
            f"no offline W&B runs of sweep {sweep_id} ({len(ended)} ended run(s)) in {where}; "
            "pass --wandb-dir DIR, the folder the trials ran in"
        )
    destination = target()
    run_dirs = {run_id: found[run_id] for run_id in ended if run_id in found}
    path, uploaded = destination.import_runs(record, run_dirs)
    return SyncResult(
        sweep=path,
        url=destination.sweep_url(path),
        runs=len(run_dirs),
        uploaded=uploaded,
        skipped=len(runs) - len(run_dirs),
    )
