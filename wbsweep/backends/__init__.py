"""Backends: where a sweep lives. ``local`` (embedded SQLite) or ``wandb`` (a W&B server).

A sweep reference tells its backend: ``entity/project/id`` is a W&B sweep, a
bare id is a sweep in the local store.
"""

from __future__ import annotations

import os
from pathlib import Path

from wbsweep.backends.base import Backend, RunRecord, SweepRecord
from wbsweep.backends.local import LocalBackend, default_store_path
from wbsweep.errors import WbsweepError

BACKEND_ENV = "WBSWEEP_BACKEND"
BACKENDS = ("local", "wandb", "auto")

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "Backend",
    "LocalBackend",
    "RunRecord",
    "SweepRecord",
    "choose_backend",
    "open_backend",
    "backend_for_sweep",
]


def choose_backend(requested: str | None) -> str:
    """The concrete backend for ``--backend`` (default ``$WBSWEEP_BACKEND``, else ``auto``)."""
    name = (requested or os.environ.get(BACKEND_ENV) or "auto").lower()
    if name not in BACKENDS:
        raise WbsweepError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        from wbsweep.backends.wandb import has_credentials

        return "wandb" if has_credentials() else "local"
    return name


def open_backend(
    name: str,
    *,
    store: str | Path | None = None,
    entity: str | None = None,
    project: str | None = None,
) -> Backend:
    """An instance of a concrete backend (``wandb`` checks the server and the key first)."""
    if name == "local":
        return LocalBackend(store if store is not None else default_store_path())
    if name == "wandb":
        from wbsweep.backends.wandb import WandbBackend

        return WandbBackend(entity=entity, project=project)
    raise WbsweepError(f"unknown backend {name!r}")


def backend_for_sweep(sweep_ref: str, *, store: str | Path | None = None) -> tuple[Backend, str]:
    """The backend holding ``sweep_ref`` and the sweep's id within it."""
    if "/" in sweep_ref:
        from wbsweep.backends.wandb import SweepPath

        path = SweepPath.parse(sweep_ref)
        return open_backend("wandb", entity=path.entity, project=path.project), str(path)
    return open_backend("local", store=store), sweep_ref
