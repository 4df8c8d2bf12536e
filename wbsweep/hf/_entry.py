"""The class behind wbsweep's entry in Transformers' search-backend table.

Built from the base class the table's own module defines, by a function, so
that installing never imports :mod:`wbsweep.hf.backend`: that module may be the
very import that loads Transformers' table (and so triggers the install), and
importing it from inside its own import is a circular import.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["backend_class"]

_lock = threading.Lock()
_built: type | None = None


def backend_class(base: type) -> type:
    """``WbsweepBackend``, a subclass of ``base`` (built once, then the same class)."""
    global _built
    with _lock:
        if _built is None:
            _built = _build(base)
        return _built


def _build(base: type) -> type:
    class WbsweepBackend(base):  # type: ignore[misc, valid-type]
        """``backend="wandb"``, run by wbsweep: a W&B sweep (or the local store) for every rank.

        Always available: the local backend needs no account, and ``wandb`` is a
        wbsweep dependency.
        """

        name = "wandb"
        pip_package = "wbsweep"

        @staticmethod
        def is_available() -> bool:
            return True

        def run(self, trainer: Any, n_trials: int, direction: str, **kwargs: Any) -> Any:
            from wbsweep.hf.search import run_search

            return run_search(trainer, n_trials, direction, **kwargs)

        def default_hp_space(self, trial: Any) -> dict[str, Any]:
            from transformers.trainer_utils import default_hp_space_wandb

            return default_hp_space_wandb(trial)

    # Where users import it from, whichever import built it.
    WbsweepBackend.__module__ = "wbsweep.hf.backend"
    WbsweepBackend.__qualname__ = "WbsweepBackend"
    return WbsweepBackend
