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

from collections.abc import Mapping, Sequence
from typing import Any

from wbsweep.training import ModelInit

__all__ = ["TrainerSession"]


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
        #: What Transformers' ``hyperparameter_search`` set (its default space, if none was given).
        self.hp_space = getattr(trainer, "hp_space", None)
        self._added_callbacks: list[Any] = []
        self._trial_callbacks: list[Any] = []

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
        trainer.model_init = ModelInit(self._model_init, params)
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
