"""One trial on the user's own ``Trainer``, run the same way on every rank.

``Trainer.hyperparameter_search`` hands us a trainer that already holds the
datasets, collator, callbacks and base ``TrainingArguments``; a trial only
changes the arguments and the model. Why the trial is applied here rather than
through ``trainer.train(trial=params)``:

* Transformers' ``_hp_search_setup`` casts with ``type(old)(value)`` (so the
  string ``"false"`` becomes ``True``) and logs one warning per model param per
  trial; :func:`wbsweep.params.apply_params` converts by the field's declared
  type and lets ``TrainingArguments`` validate the combination.
* A non-``None`` ``trial`` makes ``WandbCallback`` finish the current W&B run
  at train begin, and makes checkpoint paths read ``wandb.run.id``, which is
  ``None`` on every rank but 0.

So ``train()`` is called without a trial; ``model_init`` reaches the params
through a zero-argument wrapper (``Trainer.call_model_init`` calls a
zero-argument ``model_init`` with nothing), and the accelerator is rebuilt for
the new arguments as ``_hp_search_setup`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from wbsweep.training import ModelInit

__all__ = ["RecordingParams", "TrainerSession", "unused_params"]

logger = logging.getLogger("wbsweep.hf")


class RecordingParams(dict):
    """The trial's params as ``model_init`` sees them, noting which keys it reads.

    Anything that enumerates the dict (iteration, ``keys``, ``items``,
    ``values``, ``copy``, ``dict(trial)``, ``**trial``) counts as reading every
    key: the model may use any of them.
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        self.read: set[str] = set()

    def _all(self) -> None:
        self.read.update(super().keys())

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)

    def pop(self, key: Any, *default: Any) -> Any:
        self.read.add(key)
        return super().pop(key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().setdefault(key, default)

    def __iter__(self) -> Iterator[Any]:
        self._all()
        return super().__iter__()

    def keys(self) -> Any:
        self._all()
        return super().keys()

    def items(self) -> Any:
        self._all()
        return super().items()

    def values(self) -> Any:
        self._all()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._all()
        return dict(super().items())


def unused_params(params: Mapping[str, Any], args: Any, read: set[str]) -> list[str]:
    """Params that are neither ``TrainingArguments`` fields nor read by ``model_init``.

    >>> from types import SimpleNamespace
    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Args:
    ...     learning_rate: float = 0.1
    >>> unused_params({"learning_rate": 1, "dropout": 0, "typo": 2}, Args(), {"dropout"})
    ['typo']
    """
    fields = {f.name for f in dataclasses.fields(args)}
    return sorted(k for k in params if k not in fields and k not in read)


class TrainerSession:
    """Runs trials on the user's ``trainer`` and puts it back as it was afterwards.

    The plugin's :class:`~wbsweep.lifecycle.TrialSetup`: use it as a context
    manager around the whole search, and pass it to
    :func:`wbsweep.lifecycle.run_trial` once per trial, on every rank, with
    the same params.
    """

    #: No sweep file, so no ``SWEEP["project"]``.
    project: str | None = None

    def __init__(self, trainer: Any, *, is_main: bool) -> None:
        self._trainer = trainer
        self.is_main = is_main
        self.compute_objective = trainer.compute_objective
        self._base_args = trainer.args
        self._model_init = trainer.model_init
        self._reported = False
        self._added_callbacks: list[Any] = []
        self._trial_callbacks: list[Any] = []
        self._bound: ModelInit | None = None
        self._recorded: RecordingParams | None = None
        self._params: dict[str, Any] = {}

    # -- the search's lifetime -------------------------------------------------------

    def __enter__(self) -> TrainerSession:
        if self.is_main:
            self._ensure_wandb_callback()
        return self

    def __exit__(self, *exc: object) -> None:
        trainer = self._trainer
        for callback in self._added_callbacks:
            trainer.remove_callback(callback)
        trainer.model_init = self._model_init
        self._use_args(self._base_args)

    def _ensure_wandb_callback(self) -> None:
        """Train curves in each trial's W&B run, as Transformers' own W&B backend gives."""
        from transformers.integrations import WandbCallback

        handler = self._trainer.callback_handler
        if not any(isinstance(cb, WandbCallback) for cb in handler.callbacks):
            callback = WandbCallback()
            self._trainer.add_callback(callback)
            self._added_callbacks.append(callback)

    def _use_args(self, args: Any) -> None:
        trainer = self._trainer
        trainer.args = args
        # What _hp_search_setup does after changing the arguments.
        trainer._train_batch_size = args.train_batch_size
        trainer.create_accelerator_and_postprocess()

    # -- one trial (the TrialSetup protocol) ---------------------------------------------

    def base_args(self) -> Any:
        return self._base_args

    def trainer(self, args: Any, params: Mapping[str, Any], callbacks: Sequence[Any]) -> Any:
        """The user's trainer with this trial's arguments, model params and callbacks."""
        from transformers.integrations import WandbCallback

        trainer = self._trainer
        self._use_args(args)
        self._params = dict(params)
        self._recorded = RecordingParams(params)
        self._bound = ModelInit(self._model_init, self._recorded)
        trainer.model_init = self._bound
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, WandbCallback):
                # Set up again against this trial's run (config, step metric).
                callback._initialized = False
        self._trial_callbacks = list(callbacks)
        for callback in self._trial_callbacks:
            trainer.add_callback(callback)
        trainer.objective = None
        return trainer

    def done(self, trainer: Any, objective: float | None) -> None:
        for callback in self._trial_callbacks:
            trainer.remove_callback(callback)
        self._trial_callbacks = []
        trainer.objective = objective
        if self._bound is not None and self._bound.calls and self._recorded is not None:
            self._report_unused(self._params, self._recorded.read)

    def _report_unused(self, params: Mapping[str, Any], read: set[str]) -> None:
        """Once per search, after the first trial's ``model_init`` ran: typos, dead params."""
        if self._reported:
            return
        self._reported = True
        unused = unused_params(params, self._base_args, read)
        if not unused or not self.is_main:
            return
        names = ", ".join(unused)
        message = (
            f"hyperparameter_search: param(s) {names} are neither TrainingArguments fields "
            "nor read by model_init(trial); the sweep varies them without effect"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=2)
