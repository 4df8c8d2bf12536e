"""Backends: where a sweep lives. ``local`` (embedded SQLite) or ``wandb`` (a W&B server).

A sweep reference tells its backend: ``entity/project/id`` is a W&B sweep, a
bare id is a sweep in the local store. Callers get a :class:`Backend` and never
ask which one it is; what differs lives behind its methods.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from wbsweep.backends.base import Backend, RunLabel, RunQueue, RunRecord, SweepRecord
from wbsweep.backends.local import STORE_ENV, SWEEP_ID_ENV, LocalBackend, default_store_path
from wbsweep.errors import SweepNotFoundError, UsageError, WbsweepError

BACKEND_ENV = "WBSWEEP_BACKEND"
BACKENDS = ("local", "wandb", "auto")

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "Backend",
    "LocalBackend",
    "RunQueue",
    "RunRecord",
    "SweepRecord",
    "auto_reason",
    "backend_for_sweep",
    "choose_backend",
    "open_backend",
    "queue_from_env",
    "trial_label",
]


def choose_backend(requested: str | None) -> str:
    """The concrete backend for ``--backend`` (default ``$WBSWEEP_BACKEND``, else ``auto``).

    ``auto`` is ``wandb`` exactly when ``wandb agent`` would find a key: the
    ``wandb`` SDK's own settings and credentials decide (see
    :mod:`wbsweep.backends._wandb_auth`); else ``local``.

    Raises:
        UsageError: Not one of :data:`BACKENDS`.
    """
    name = (requested or os.environ.get(BACKEND_ENV) or "auto").lower()
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        from wbsweep.backends._wandb_auth import has_credentials

        return "wandb" if has_credentials() else "local"
    return name


def auto_reason(chosen: str) -> str:
    """Why ``auto`` chose ``chosen``, naming the W&B server (never the key)."""
    from wbsweep.backends._wandb_auth import login

    found = login()
    if chosen == "wandb":
        return f"logged in to {found.describe()}"
    return f"no W&B login for {found.url}"


def open_backend(
    name: str,
    *,
    store: str | Path | None = None,
    entity: str | None = None,
    project: str | None = None,
) -> Backend:
    """An instance of a concrete backend (``wandb`` checks the server and the key first).

    Raises:
        UsageError: An unknown backend name.
        WandbLoginError, WandbUnreachableError: ``wandb`` and the server will not take the key.
    """
    if name == "local":
        return LocalBackend(store if store is not None else default_store_path())
    if name == "wandb":
        from wbsweep.backends.wandb import WandbBackend

        return WandbBackend(entity=entity, project=project)
    raise UsageError(f"unknown backend {name!r}; expected local or wandb")


def backend_for_sweep(
    sweep_ref: str,
    *,
    store: str | Path | None = None,
    entity: str | None = None,
    project: str | None = None,
) -> tuple[Backend, str]:
    """The backend holding ``sweep_ref`` and the sweep's id within it.

    ``entity/project/id`` is a W&B sweep. A bare id is one too when ``entity``
    or ``project`` is given (``-e``/``-p``, as ``wandb agent`` takes them), or
    when the local store does not know it, ``WANDB_PROJECT`` is set (where
    ``wandb agent ID`` looks) and W&B credentials exist; otherwise it is the
    local store's, whose error says where it looked.
    """
    if "/" in sweep_ref:
        from wbsweep.backends.wandb import SweepPath

        path = SweepPath.parse(sweep_ref)
        return open_backend("wandb", entity=path.entity, project=path.project), str(path)
    if entity or project or (os.environ.get("WANDB_PROJECT") and _on_wandb_only(sweep_ref, store)):
        wandb = open_backend("wandb", entity=entity, project=project)
        return wandb, wandb.resolve(sweep_ref)
    return open_backend("local", store=store), sweep_ref


def _on_wandb_only(sweep_id: str, store: str | Path | None) -> bool:
    """Whether a bare id is not the local store's and W&B credentials exist to look there."""
    from wbsweep.backends._wandb_auth import has_credentials

    if not has_credentials():
        return False
    path = Path(store) if store is not None else default_store_path()
    if not path.is_file():
        return True
    try:
        LocalBackend(path).sweep_state(sweep_id)
    except WbsweepError:
        return True
    return False


def queue_from_env(environ: Mapping[str, str] | None = None) -> RunQueue | None:
    """The run queue a trial reports to, on rank 0 only: ``$WBSWEEP_STORE``'s.

    Only when the store holds the trial's sweep (``WBSWEEP_SWEEP_ID``, which a
    local worker exports, or ``WANDB_SWEEP_ID``): a ``wandb agent``'s trial
    reports to W&B alone, even where ``WBSWEEP_STORE`` is set for other
    commands, and no store is created for it. Ranks other than 0 never report.

    >>> queue_from_env({"WBSWEEP_STORE": "/nonexistent/s.db", "WANDB_SWEEP_ID": "a"}) is None
    True
    >>> queue_from_env({"WBSWEEP_STORE": "s.db", "WBSWEEP_SWEEP_ID": "abc", "RANK": "1"}) is None
    True
    """
    source = os.environ if environ is None else environ
    path = source.get(STORE_ENV)
    sweep_id = source.get(SWEEP_ID_ENV) or source.get("WANDB_SWEEP_ID")
    if not path or not sweep_id or int(source.get("RANK", "0") or 0) != 0:
        return None
    if not Path(path).is_file():
        return None
    store = LocalBackend(path)
    try:
        store.sweep_state(sweep_id)
    except SweepNotFoundError:
        return None
    return store.queue


def trial_label(environ: Mapping[str, str] | None = None) -> RunLabel | None:
    """How the W&B run of the trial this process runs reads (:meth:`Backend.run_label`).

    The trial's sweep is the local store's when a local worker started it (see
    :func:`queue_from_env`), else the W&B sweep a ``wandb agent`` named
    (``WANDB_SWEEP_ID`` in ``WANDB_ENTITY``/``WANDB_PROJECT``). ``None`` when
    there is no sweep or its backend cannot say (the run keeps W&B's own name):
    a label never fails a trial.
    """
    source = os.environ if environ is None else environ
    run_id = source.get("WANDB_RUN_ID")
    if not run_id:
        return None
    try:
        queue = queue_from_env(source)
        if isinstance(queue, Backend):
            sweep_id = source.get(SWEEP_ID_ENV) or source.get("WANDB_SWEEP_ID") or ""
            return queue.run_label(sweep_id, run_id)
        sweep_id = source.get("WANDB_SWEEP_ID")
        if not sweep_id or source.get("WANDB_MODE") in ("offline", "disabled"):
            return None
        wandb = _trial_wandb(source.get("WANDB_ENTITY"), source.get("WANDB_PROJECT"))
        return wandb.run_label(wandb.resolve(sweep_id), run_id)
    except Exception:  # noqa: BLE001 - W&B's own name then; the trial goes on
        return None


@functools.lru_cache(maxsize=4)
def _trial_wandb(entity: str | None, project: str | None) -> Backend:
    # One login check per process: a warm rank labels trial after trial.
    return open_backend("wandb", entity=entity, project=project)
