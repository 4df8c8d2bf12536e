"""One trial on the user's own ``Trainer``, run the same way on every rank.

``Trainer.hyperparameter_search`` hands us a trainer that already holds the
datasets, collator, callbacks and base ``TrainingArguments``; a trial only
changes the arguments and the model. Why the trial is applied here rather than
through ``trainer.train(trial=params)``:

* Transformers' ``_hp_search_setup`` casts with ``type(old)(value)`` (so the
  string ``"false"`` becomes ``True``) and logs one warning per model param per
  trial; :func:`wbsweep.trial.apply_params` converts by the field's declared
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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from wbsweep.trial import apply_params, first_step_callback, objective_of, plain_floats

__all__ = ["RecordingParams", "TrialSession", "unused_params"]

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


def _bind_model_init(model_init: Callable[..., Any], params: RecordingParams) -> Callable[[], Any]:
    from transformers.trainer_utils import number_of_arguments

    takes_trial = number_of_arguments(model_init) == 1

    def model_init_for_trial() -> Any:
        # A fresh model on every call: Trainer asks once per train().
        return model_init(params) if takes_trial else model_init()

    return model_init_for_trial


class TrialSession:
    """Runs trials on ``trainer`` and puts it back as it was afterwards.

    Use as a context manager around the whole search; :meth:`run` once per
    trial, on every rank, with the same params.
    """

    def __init__(self, trainer: Any, *, is_main: bool) -> None:
        self.trainer = trainer
        self.is_main = is_main
        self._base_args = trainer.args
        self._model_init = trainer.model_init
        self._reported = False
        self._added_callbacks: list[Any] = []

    # -- the search's lifetime -------------------------------------------------------

    def __enter__(self) -> TrialSession:
        if self.is_main:
            self._ensure_wandb_callback()
        return self

    def __exit__(self, *exc: object) -> None:
        trainer = self.trainer
        for callback in self._added_callbacks:
            trainer.remove_callback(callback)
        trainer.model_init = self._model_init
        self._use_args(self._base_args)

    def _ensure_wandb_callback(self) -> None:
        """Train curves in each trial's W&B run, as Transformers' own W&B backend gives."""
        from transformers.integrations import WandbCallback

        handler = self.trainer.callback_handler
        if not any(isinstance(cb, WandbCallback) for cb in handler.callbacks):
            callback = WandbCallback()
            self.trainer.add_callback(callback)
            self._added_callbacks.append(callback)

    def _use_args(self, args: Any) -> None:
        trainer = self.trainer
        trainer.args = args
        # What _hp_search_setup does after changing the arguments.
        trainer._train_batch_size = args.train_batch_size
        trainer.create_accelerator_and_postprocess()

    # -- one trial ---------------------------------------------------------------------

    def run(
        self,
        run_id: str,
        params: Mapping[str, Any],
        *,
        on_first_step: Callable[[], None] | None = None,
    ) -> tuple[float, dict[str, float]]:
        """Train a fresh model with ``params``, evaluate, return (objective, metrics).

        Raises:
            TrialError: The params do not fit ``TrainingArguments`` or the
                objective is not a finite number.
            Exception: Whatever ``model_init``, the Trainer or
                ``compute_objective`` raised.
        """
        from transformers.integrations import WandbCallback

        trainer = self.trainer
        self._use_args(apply_params(self._base_args, params, run_dir=f"run-{run_id}"))
        recorded = RecordingParams(params)
        trainer.model_init = _bind_model_init(self._model_init, recorded)
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, WandbCallback):
                # Set up again against this trial's run (config, step metric).
                callback._initialized = False
        first_step = first_step_callback(on_first_step) if on_first_step and self.is_main else None
        if first_step is not None:
            trainer.add_callback(first_step)
        try:
            trainer.objective = None
            trainer.train()
            self._report_unused(params, recorded)
            metrics = plain_floats(trainer.evaluate())
            objective = objective_of(trainer.compute_objective, metrics)
            trainer.objective = objective
        finally:
            if first_step is not None:
                trainer.remove_callback(first_step)
        return objective, metrics

    def _report_unused(self, params: Mapping[str, Any], recorded: RecordingParams) -> None:
        """Once per search, after the first trial's ``model_init`` ran: typos, dead params."""
        if self._reported:
            return
        self._reported = True
        unused = unused_params(params, self._base_args, recorded.read)
        if not unused or not self.is_main:
            return
        names = ", ".join(unused)
        message = (
            f"hyperparameter_search: param(s) {names} are neither TrainingArguments fields "
            "nor read by model_init(trial); the sweep varies them without effect"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=2)
