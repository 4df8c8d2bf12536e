"""One trial, start to end, in the current process: the lifecycle every path runs.

:func:`run_trial` takes a run's params to a result: params into
``TrainingArguments``, the trial's W&B run (rank 0), a fresh model and
``Trainer``, train, evaluate, the objective, and the reports to the sweep's
record. It can be called again in the same process with the next run's
params. Three callers differ only in who calls it:

* the cold entry point, ``python -m wbsweep.trial`` under ``accelerate launch``
  (:mod:`wbsweep.trial`), one trial per process;
* the ``hyperparameter_search`` plugin (:mod:`wbsweep.hf`), many trials on the
  user's own ``Trainer``;
* a warm worker, many trials in one long-lived process group.

Where the ``Trainer`` comes from is a :class:`TrialSetup`:
:class:`wbsweep.training.SweepFileTrainer` builds one per trial from a sweep
file; :class:`wbsweep.hf.session.TrainerSession` reuses the user's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wbsweep.backends._wandb_records import RAN_AS_KEY, WORKER_KEY
from wbsweep.backends.base import Reporter
from wbsweep.backends.records import UNUSED_KEY
from wbsweep.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    TrialStopped,
    UsageError,
    WbsweepError,
)
from wbsweep.params import RecordingParams, apply_params, trial_params, warn_unread
from wbsweep.procs import PREEMPTION, Terminated, node_preempting
from wbsweep.shape import WORKER_ENV, ran_as
from wbsweep.sweepfile import SweepFile
from wbsweep.training import (
    EarlyStop,
    ProgressReport,
    SweepFileTrainer,
    ending_callback,
    evaluation_callback,
    first_step_callback,
    last_checkpoint,
    objective_of,
    plain_floats,
    progress_callback,
)
from wbsweep.wandb_run import RunSettings, TrialRun

__all__ = ["GOALS", "TrialResult", "TrialSetup", "rank", "run_trial"]

GOALS = ("minimize", "maximize")


@dataclass(frozen=True)
class TrialResult:
    """What one trial produced.

    Attributes:
        objective: The finite objective value (``compute_objective(metrics)``).
        metrics: The final evaluation metrics, as plain floats.
        run_id: The run id (the W&B run's id on rank 0).
        output_dir: Where the Trainer wrote (``output_dir/run-<run id>``).
    """

    objective: float
    metrics: dict[str, float]
    run_id: str
    output_dir: str


class TrialSetup(Protocol):
    """Where a trial's ``Trainer`` comes from, and what the lifecycle asks of it."""

    #: ``compute_objective(metrics)``, or None for Transformers' default.
    compute_objective: Callable[[dict[str, float]], Any] | None
    #: The sweep file's ``SWEEP["project"]``, the W&B project's third choice.
    project: str | None
    #: The search space, replayed with each run's sampled values (see :mod:`wbsweep.params`).
    hp_space: Any

    def base_args(self) -> Any:
        """The base ``TrainingArguments`` the trial's params override."""

    def trainer(self, args: Any, params: Mapping[str, Any], callbacks: Sequence[Any]) -> Any:
        """A ``Trainer`` with ``args``, a fresh model for ``params`` and ``callbacks`` added.

        ``params`` is what ``model_init(trial)`` gets: pass this very object on, so
        the trial sees which keys it reads.
        """

    def done(self, trainer: Any, objective: float | None) -> None:
        """The trial ended (``objective`` None: it failed); undo per-trial changes."""


def rank() -> int:
    """This process's global rank, as the launcher set it (0 when not distributed)."""
    return int(os.environ.get("RANK", "0") or 0)


def run_trial(
    setup: TrialSetup | SweepFile,
    params: Mapping[str, Any],
    *,
    run_id: str,
    metric: str,
    goal: str,
    reporter: Reporter | None = None,
    wandb: RunSettings | None = RunSettings(),  # noqa: B008 - frozen, never mutated
    is_main: bool | None = None,
    ready: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    finishing: Callable[[], None] | None = None,
    finish_run: Callable[[TrialRun, int], None] | None = None,
) -> TrialResult:
    """Train and evaluate one trial on this rank; rank 0 logs and reports it.

    Callable again in the same process for the next trial: each call builds
    fresh ``TrainingArguments``, model and ``Trainer``, and finishes its W&B run.

    Args:
        setup: Where the ``Trainer`` comes from (a sweep file builds one per trial).
        params: This trial's params (the same on every rank).
        run_id: The run id; rank 0's W&B run has it, and reports name it.
        metric: The sweep metric's name, logged with the objective's value.
        goal: ``"minimize"`` or ``"maximize"``; sets the metric's W&B summary.
        reporter: Where rank 0 reports besides W&B (the sweep's record), or None.
        wandb: How rank 0 opens its W&B run; None for no W&B run.
        is_main: Whether this is rank 0 [default: from ``RANK``].
        ready: Called once the run is open and the arguments are built, just
            before training starts (the plugin tells the other ranks to start).
        should_stop: Asked on rank 0 after each evaluation during training
            whether the sweep stops this run (hyperband); every rank then ends
            training at the same step.
        finishing: Called on rank 0 once training ended well, before the final
            evaluation (a warm worker claims its next run meanwhile).
        finish_run: Ends rank 0's W&B run with the exit code, in place of
            ``TrialRun.finish`` (a warm worker lets the run's last upload go on
            while the next trial trains); the run is then opened alongside
            runs that are still finishing.

    Returns:
        The objective and final eval metrics.

    Raises:
        TrialError: The sweep file returned something unusable, the params do
            not fit ``TrainingArguments``, or the objective is not finite.
        TrialStopped: ``should_stop`` said so; on every rank.
        Terminated: SIGTERM arrived (the W&B run ends with exit code 143). During
            training, every rank first saves a checkpoint at the same step; the
            next call for this run id resumes from it, and its W&B run goes on.
        Exception: Whatever the user's code or Trainer raised.
    """
    if goal not in GOALS:
        raise UsageError(f"goal must be one of {', '.join(GOALS)}, not {goal!r}")
    if isinstance(setup, SweepFile):
        setup = SweepFileTrainer(setup)
    main = rank() == 0 if is_main is None else is_main
    PREEMPTION.reset()
    applied = trial_params(setup.hp_space, params)
    args = apply_params(setup.base_args(), applied.arguments, run_dir=f"run-{run_id}")
    how = ran_as()
    if applied.unused:  # another branch's params: sampled, not used by this run
        how[UNUSED_KEY] = list(applied.unused)
    # A preempted run left a checkpoint in its own output dir: it goes on from there.
    resume = last_checkpoint(args.output_dir)
    run = None
    if main and wandb is not None:
        settings = dataclasses.replace(wandb, sweep_project=wandb.sweep_project or setup.project)
        # The worker that runs it (``wbsweep agent`` names it): W&B keeps no other record.
        worker = {WORKER_KEY: os.environ[WORKER_ENV]} if os.environ.get(WORKER_ENV) else {}
        # Params last: a sweep run's config must hold the sweep's own values.
        config = {**args.to_sanitized_dict(), RAN_AS_KEY: how, **worker, **params}
        run = TrialRun.open(
            settings, run_id=run_id, config=config, metric=metric, goal=goal,
            alongside=finish_run is not None,
        )  # fmt: skip
    if ready is not None:
        ready()
    reporting = reporter if main else None
    early_stop = EarlyStop()
    stop_poll = _StopPoll(should_stop, early_stop) if should_stop is not None and main else None
    report = functools.partial(_report_evaluation, run, reporting, run_id, metric)
    progress = None
    if main and (run is not None or reporting is not None):
        progress = ProgressReport(functools.partial(_report_progress, run, reporting, run_id))

    def evaluated(step: int, objective: float, metrics: dict[str, float]) -> None:
        report(step, objective, metrics)
        if progress is not None:
            progress.evaluated(step, objective)
        if stop_poll is not None:
            stop_poll.evaluated()

    evaluations = evaluation_callback(setup.compute_objective, evaluated)
    ending = ending_callback(PREEMPTION, early_stop, stop_poll.step if stop_poll else None)
    callbacks = [evaluations, ending]
    if progress is not None:
        callbacks.append(progress_callback(progress))
    if reporting is not None:
        started = functools.partial(reporting.record_started, run_id, how)
        callbacks.append(first_step_callback(started))

    exit_code, trainer, objective = EXIT_FAILED, None, None
    try:
        model_params = RecordingParams(applied.model, checked=applied.checked)
        trainer = setup.trainer(args, model_params, callbacks)
        trainer.train(resume_from_checkpoint=resume)
        if main:  # model_init has run: a param that reached nothing is a typo or dead
            warn_unread(model_params, args)
        if ending.preempted:  # a checkpoint is saved: leave, to resume later
            # This node's agent was told to go, or the agent died, or another rank (another
            # node of the trial) got the scheduler's SIGTERM: W&B hands the run out again.
            elsewhere = not PREEMPTION.requested
            if run is not None and (node_preempting() or PREEMPTION.agent_lost() or elsewhere):
                run.mark_preempting()
            raise Terminated
        if ending.stopped:
            exit_code = 0  # the run keeps what it reported; the sweep records it stopped
            raise TrialStopped(f"run {run_id} stopped early by the sweep's early termination")
        evaluations.training = False
        if finishing is not None and main:
            finishing()
        metrics = plain_floats(trainer.evaluate())
        objective = objective_of(setup.compute_objective, metrics)
        if run is not None:
            run.set_final(objective, metrics)
        if reporting is not None:
            reporting.record_result(run_id, objective, metrics)
        exit_code = 0
    except Terminated:
        exit_code = EXIT_TERMINATED
        raise
    except KeyboardInterrupt:
        exit_code = EXIT_INTERRUPTED
        raise
    finally:
        if trainer is not None:
            setup.done(trainer, objective)
        if run is not None:
            (finish_run or TrialRun.finish)(run, exit_code)
    return TrialResult(objective, metrics, run_id, args.output_dir)


class _StopPoll:
    """Asks ``should_stop`` at the first step after each evaluation, and at most every ``every`` s.

    Right after an evaluation is when hyperband may decide; between, a stop from
    W&B (the stop button) is still seen within about a second.
    """

    def __init__(self, should_stop: Callable[[], bool], early_stop: EarlyStop, every: float = 1.0):
        self._should_stop = should_stop
        self._early_stop = early_stop
        self._every = every
        self._fresh = False
        self._last = time.monotonic()

    def evaluated(self) -> None:
        self._fresh = True

    def step(self) -> None:
        now = time.monotonic()
        if self._early_stop.requested or not (self._fresh or now - self._last >= self._every):
            return
        self._fresh, self._last = False, now
        if self._should_stop():
            self._early_stop.requested = True


def _report_evaluation(
    run: TrialRun | None,
    reporter: Reporter | None,
    run_id: str,
    metric: str,
    step: int,
    objective: float,
    metrics: dict[str, float],
) -> None:
    if run is not None:
        run.log_objective(objective)
    if reporter is not None:
        reporter.record_history(run_id, step, {**metrics, metric: objective})


def _report_progress(
    run: TrialRun | None, reporter: Reporter | None, run_id: str, progress: dict[str, Any]
) -> None:
    """Where the trial is, to its W&B run's summary and the sweep's record (never fatal)."""
    if run is not None:
        run.set_progress(progress)
    if reporter is not None:
        with contextlib.suppress(WbsweepError):  # a busy store: the next report says it again
            reporter.record_progress(run_id, progress)
