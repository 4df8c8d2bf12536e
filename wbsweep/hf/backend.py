"""wbsweep's entry for Transformers' ``ALL_HYPERPARAMETER_SEARCH_BACKENDS`` table.

Imported only once Transformers' ``hyperparameter_search`` module is loaded
(by :func:`wbsweep.hf.install` or the import hook), never by ``import wbsweep``.
"""

from __future__ import annotations

from typing import Any

from transformers.hyperparameter_search import HyperParamSearchBackendBase

__all__ = ["WbsweepBackend"]


class WbsweepBackend(HyperParamSearchBackendBase):
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
