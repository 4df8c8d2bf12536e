"""The Trainer glue of a trial: the model bound to its params, callbacks, the objective.

And :class:`SweepFileTrainer`, which builds each trial's ``Trainer`` from a
sweep file (the ``hyperparameter_search`` plugin has its own, over the user's
``Trainer``: :mod:`wbsweep.hf.session`). Both plug into
:func:`wbsweep.lifecycle.run_trial`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wbsweep.errors import TrialError
from wbsweep.procs import Preemption
from wbsweep.sweepfile import SweepFile

__all__ = [
    "ModelInit",
    "SweepFileTrainer",
    "datasets_of",
    "datasets_take_params",
    "evaluation_callback",
    "first_step_callback",
    "last_checkpoint",
    "objective_of",
    "plain_floats",
    "EarlyStop",
    "ending_callback",
    "trainer_kwargs_of",
]

# Arguments the trial owns; a sweep file's trainer_kwargs() must not set them.
_RESERVED_TRAINER_KWARGS = frozenset(
    {"model", "model_init", "args", "train_dataset", "eval_dataset"}
)


class ModelInit:
    """The user's ``model_init`` bound to the trial's params: one model per trial.

    Zero-argument on purpose: ``Trainer.call_model_init`` passes its own
    ``trial`` (None outside Transformers' own search), never our params. A
    ``model_init`` that takes one argument gets ``params`` (the same object
    each time, so a recording dict sees every read); one that takes none is
    called bare, as Transformers does. ``Trainer`` asks twice when built with
    ``model_init`` (in ``__init__`` and again in ``train``); the second ask gets
    the same untouched model instead of a second, identical load.
    """

    def __init__(self, model_init: Callable[..., Any], params: Mapping[str, Any]) -> None:
        from transformers.trainer_utils import number_of_arguments

        self._model_init = model_init
        self._params = params
        self._takes_params = number_of_arguments(model_init) == 1
        self._spare: Any = None
        self._calls = 0

    @property
    def calls(self) -> int:
        """How many times the Trainer asked for a model."""
        return self._calls

    def __call__(self) -> Any:
        self._calls += 1
        if self._spare is not None:
            model, self._spare = self._spare, None
            return model
        model = self._model_init(self._params) if self._takes_params else self._model_init()
        if model is None:
            raise TrialError("model_init returned None")
        if self._calls == 1:
            self._spare = model
        return model


def datasets_of(sweep: SweepFile, params: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """The sweep file's ``(train_dataset, eval_dataset)``, checked.

    A ``datasets(trial)`` that takes one argument gets the trial's params (a
    tokenizer's ``max_length`` swept, say); one that takes none is called bare.
    """
    value = sweep.datasets(params or {}) if datasets_take_params(sweep) else sweep.datasets()
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TrialError("datasets() must return (train_dataset, eval_dataset)")
    return value[0], value[1]


def datasets_take_params(sweep: SweepFile) -> bool:
    """Whether the sweep file's ``datasets`` takes the trial's params (one argument)."""
    from transformers.trainer_utils import number_of_arguments

    return number_of_arguments(sweep.datasets) == 1


def trainer_kwargs_of(sweep: SweepFile) -> dict[str, Any]:
    """The sweep file's extra ``Trainer`` arguments, without the ones a trial builds."""
    if sweep.trainer_kwargs is None:
        return {}
    kwargs = sweep.trainer_kwargs()
    if not isinstance(kwargs, Mapping):
        raise TrialError(f"trainer_kwargs() returned {type(kwargs).__name__}, not a dict")
    reserved = sorted(_RESERVED_TRAINER_KWARGS & set(kwargs))
    if reserved:
        raise TrialError(
            f"trainer_kwargs() must not set {', '.join(reserved)}: the trial builds those"
        )
    return dict(kwargs)


def plain_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics as floats; anything else is dropped.

    >>> plain_floats({"eval_loss": 0.5, "epoch": 1, "note": "x"})
    {'eval_loss': 0.5, 'epoch': 1.0}
    """
    plain: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            plain[key] = float(value)
        except (TypeError, ValueError):
            continue  # non-numeric extras cannot be an objective or a summary number
    return plain


def objective_of(
    compute: Callable[[dict[str, float]], Any] | None, metrics: Mapping[str, float]
) -> float:
    """``compute(metrics)``, or Transformers' ``default_compute_objective``, checked finite.

    Raises:
        TrialError: The value is not a number, or not finite.
    """
    if compute is not None:
        source = "compute_objective(metrics)"
        value = compute(dict(metrics))
    else:
        from transformers.trainer_utils import default_compute_objective

        source = "the default objective (eval_loss, or the sum of eval metrics)"
        value = default_compute_objective(dict(metrics))
    try:
        objective = float(value)
    except (TypeError, ValueError):
        raise TrialError(f"{source} returned {type(value).__name__}, not a number") from None
    if not math.isfinite(objective):
        raise TrialError(f"{source} is {objective}: the objective must be finite")
    return objective


def first_step_callback(notify: Callable[[], None]) -> Any:
    """A ``TrainerCallback`` that calls ``notify`` once, at rank 0's first optimizer step."""
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def __init__(self) -> None:
            self.notify: Callable[[], None] | None = notify

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.notify is not None and state.is_world_process_zero:
                call, self.notify = self.notify, None
                call()

    return FirstStep()


#: Seconds between two progress reports of a training trial (besides its first step,
#: each evaluation and its last step).
PROGRESS_EVERY = 2.0


class ProgressReport:
    """Rank 0's word on where its trial is, for ``wbsweep agent`` and ``wbsweep status``.

    ``send(progress)`` gets ``{"step", "total", "at", "started_at"}`` and, after an
    evaluation, ``"eval"`` (the sweep metric) and ``"eval_step"``; once training
    ended, ``"phase": "evaluating"``. It is sent at the first step, at each
    evaluation, at the end of training and at most every ``every`` seconds
    between, so a report costs one short write every few seconds.

    >>> sent = []
    >>> report = ProgressReport(sent.append, every=60, clock=lambda: 100.0)
    >>> report.step(1, 10); report.step(2, 10); report.evaluated(2, 0.5)
    >>> [(p["step"], p.get("eval")) for p in sent]
    [(1, None), (2, 0.5)]
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        *,
        every: float = PROGRESS_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self._every = every
        self._clock = clock
        self._sent_at: float | None = None
        self.progress: dict[str, Any] = {}

    def step(self, step: int, total: int | None, *, force: bool = False) -> None:
        """Training reached ``step`` of ``total``; sent when due (or ``force``)."""
        now = self._clock()
        self.progress.setdefault("started_at", now)
        self.progress.update(step=int(step), total=int(total) if total else None, at=now)
        self.progress.pop("phase", None)
        if force or self._sent_at is None or now - self._sent_at >= self._every:
            self._flush(now)

    def trained(self, step: int, total: int | None) -> None:
        """Training ended at ``step``: the final evaluation comes next (``phase``); sent at once."""
        now = self._clock()
        self.progress.setdefault("started_at", now)
        self.progress.update(step=int(step), total=int(total) if total else None, at=now)
        self.progress["phase"] = "evaluating"
        self._flush(now)

    def evaluated(self, step: int, value: float) -> None:
        """The sweep metric at an evaluation during training; sent at once."""
        now = self._clock()
        self.progress.setdefault("started_at", now)
        self.progress.setdefault("step", int(step))
        finite = math.isfinite(value)
        self.progress.update(eval=float(value) if finite else None, eval_step=int(step), at=now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        self._sent_at = now
        self._send(dict(self.progress))


def progress_callback(report: ProgressReport) -> Any:
    """A ``TrainerCallback`` that tells ``report`` rank 0's step after each optimizer step."""
    from transformers import TrainerCallback

    class ReportProgress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                report.step(state.global_step, state.max_steps)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero and report.progress:
                report.trained(state.global_step, state.max_steps)

    return ReportProgress()


def evaluation_callback(
    compute: Callable[[dict[str, float]], Any] | None,
    report: Callable[[int, float, dict[str, float]], None],
) -> Any:
    """A ``TrainerCallback`` that reports the objective at every evaluation during training.

    ``report(step, objective, metrics)`` runs on rank 0 only. W&B's hyperband
    reads the sweep metric's history: with the objective reported at each
    ``eval_strategy`` evaluation, a weak trial can be stopped early. Set
    ``training = False`` before the final evaluation, which the trial reports
    itself.
    """
    from transformers import TrainerCallback

    class ReportEvaluations(TrainerCallback):
        training = True

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
        ) -> None:
            if not (self.training and state.is_world_process_zero and metrics):
                return
            values = plain_floats(metrics)
            try:
                objective = objective_of(compute, values)
            except Exception:  # noqa: BLE001 - an objective only the final metrics allow
                return
            report(int(state.global_step), objective, values)

    return ReportEvaluations()


class EarlyStop:
    """Rank 0's word that the sweep stops this run now (hyperband): every rank ends training."""

    def __init__(self) -> None:
        self.requested = False


def ending_callback(
    preemption: Preemption, early_stop: EarlyStop, poll: Callable[[], None] | None = None
) -> Any:
    """A ``TrainerCallback`` that ends training when preemption or an early stop is asked.

    A preemption (a scheduler's SIGTERM, on any rank) saves a checkpoint first;
    an early stop (rank 0 heard it from the sweep) does not. Ranks do not learn
    of either before the same step, so with several ranks they agree at every
    step (one small all-reduce: any rank asked means all end) and every rank
    ends at the same step, with no collective left hanging. ``preempted`` and
    ``stopped`` say which ended training. ``poll`` runs first at every step on
    this rank (rank 0 asks the sweep there whether to stop).
    """
    from transformers import TrainerCallback

    class EndTogether(TrainerCallback):
        preempted = False
        stopped = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            preemption.in_training = True

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            preemption.in_training = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if poll is not None:
                poll()
            asked = [preemption.requested, early_stop.requested]
            if args.world_size > 1:
                asked = _any_rank(asked, args.device)
            if asked[0]:
                control.should_save = True
                self.preempted = True
            elif asked[1]:
                self.stopped = True
            control.should_training_stop = control.should_training_stop or any(asked)

    return EndTogether()


def _any_rank(flags: list[bool], device: Any) -> list[bool]:
    """Each flag, true when it is true on any rank."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flags
    value = torch.tensor([int(flag) for flag in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return [bool(item) for item in value.tolist()]


def last_checkpoint(output_dir: str) -> str | None:
    """The newest ``checkpoint-N`` under ``output_dir`` (a preempted run's), if any."""
    import os

    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


class SweepFileTrainer:
    """Builds each trial's ``Trainer`` from a sweep file (a ``TrialSetup``).

    With ``reuse_datasets`` (a warm worker's many trials), a ``datasets()`` that
    takes no params is called once and its datasets serve every trial; the
    model, the ``Trainer`` and ``trainer_kwargs()`` are new for each trial.
    """

    def __init__(self, sweep: SweepFile, *, reuse_datasets: bool = False) -> None:
        self.sweep = sweep
        self._reuse = reuse_datasets and not datasets_take_params(sweep)
        self._datasets: tuple[Any, Any] | None = None
        self.compute_objective = sweep.compute_objective
        self.hp_space = sweep.hp_space
        project = sweep.defaults.get("project")
        self.project: str | None = str(project) if project else None

    def base_args(self) -> Any:
        from transformers import TrainingArguments

        base = self.sweep.training_args()
        if not isinstance(base, TrainingArguments):
            raise TrialError(
                f"training_args() returned {type(base).__name__}, not TrainingArguments"
            )
        return base

    def trainer(self, args: Any, params: Mapping[str, Any], callbacks: Sequence[Any]) -> Any:
        from transformers import Trainer

        train_dataset, eval_dataset = self.datasets(params)
        kwargs = trainer_kwargs_of(self.sweep)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), *callbacks]
        return Trainer(
            model_init=ModelInit(self.sweep.model_init, params),
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )

    def datasets(self, params: Mapping[str, Any]) -> tuple[Any, Any]:
        """This trial's datasets: built once and kept, or built for its params."""
        if not self._reuse:
            return datasets_of(self.sweep, params)
        if self._datasets is None:
            self._datasets = datasets_of(self.sweep)
        return self._datasets

    def done(self, trainer: Any, objective: float | None) -> None:
        """Nothing to put back: every trial built its own ``Trainer``."""
