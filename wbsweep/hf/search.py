"""``trainer.hyperparameter_search(backend="wandb")`` run by wbsweep, on one rank or N.

Execution model: every rank of an ``accelerate launch`` / ``torchrun`` job
calls ``hyperparameter_search``. Rank 0 alone talks to the sweep's backend
(one sweep, one agent per job) through :meth:`Backend.drive
<wbsweep.backends.base.Backend.drive>`: the run loop over the local store, or
``wandb.agent(function=...)`` on W&B. For each run, once its W&B run is open,
rank 0 broadcasts ``("trial", run_id, params, metric, goal)`` to every rank
with ``torch.distributed.broadcast_object_list``; every rank runs the same
:func:`wbsweep.lifecycle.run_trial` on the user's ``Trainer``
(:class:`wbsweep.hf.session.TrainerSession`), and a final ``("done",)`` ends
the loop everywhere. Rank 0 then broadcasts the outcome (the ``BestRun``, or
the error) so every rank returns the same value. Only rank 0 ever creates a
W&B run; the others run with ``WANDB_MODE=disabled`` for the search. A local
sweep's W&B runs are offline unless ``WANDB_MODE`` says otherwise.

``n_trials`` is the sweep's ``run_cap`` (sweep-wide, over every process and
machine), not a per-process count; ``wbsweep_count`` limits this process.
The ``BestRun`` is rebuilt from the sweep's own record, so it covers runs made
by every process, and its ``hyperparameters`` are only the sweep's params.

A trial that raises is recorded as failed and the search goes on, on every
rank. That is safe for errors every rank meets alike (a param that
``TrainingArguments`` rejects, a bug in ``model_init``); an error on one rank
only, mid-training, leaves the others in a collective, as in any DDP job.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wbsweep import procs
from wbsweep.backends import choose_backend
from wbsweep.backends.base import Backend, ClaimedRun, DriveOptions, RunLabel
from wbsweep.errors import (
    EXIT_TERMINATED,
    ConfigError,
    TrialStopped,
    WbsweepError,
)
from wbsweep.hf._ranks import Ranks, picklable
from wbsweep.hf.session import TrainerSession
from wbsweep.lifecycle import run_trial
from wbsweep.prepare import SweepOptions, build_config
from wbsweep.wandb_run import RunSettings

__all__ = ["SearchOptions", "parse_options", "run_search", "sweep_config"]

logger = logging.getLogger("wbsweep.hf")

SWEEP_ID_ENV = "WBSWEEP_SWEEP_ID"
COUNT_ENV = "WBSWEEP_COUNT"
# W&B's own default command: the sweep's trials run in-process here, so the
# command only documents how the search was started.
IN_PROCESS_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
# As `wandb agent` does: several failures in a row usually mean a bug, not bad luck.
MAX_CONSECUTIVE_FAILURES = 3

_MODEL_INIT_REQUIRED = (
    "To use hyperparameter search, you need to pass your model through a model_init function."
)


@dataclass(frozen=True)
class SearchOptions:
    """What ``hyperparameter_search``'s arguments ask of wbsweep (resolved, validated).

    ``sweep`` holds what shapes a new sweep's config, as ``wbsweep create``'s
    options do; ``sweep.direction`` is already a W&B goal.
    """

    backend: str
    sweep: SweepOptions
    store: str | None = None
    sweep_id: str | None = None
    entity: str | None = None
    count: int | None = None


def parse_options(
    n_trials: int,
    direction: Any,
    kwargs: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> SearchOptions:
    """Resolve the keyword arguments; unknown ones are an error, not silently dropped.

    >>> parse_options(3, "max", {"wbsweep_backend": "local", "metric": "acc"}).sweep.direction
    'maximize'
    """
    from wbsweep.config import normalize_goal

    environ = os.environ if environ is None else environ
    known = {
        "sweep_id", "project", "entity", "name", "metric", "method",
        "wbsweep_backend", "wbsweep_store", "wbsweep_count",
    }  # fmt: skip
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"hyperparameter_search(backend='wandb') got unexpected argument(s) "
            f"{', '.join(unknown)}; wbsweep accepts {', '.join(sorted(known))}"
        )
    if isinstance(direction, list | tuple):
        raise ConfigError("wbsweep runs single-objective sweeps: give one direction")
    count = kwargs.get("wbsweep_count")
    if count is None and environ.get(COUNT_ENV):
        count = int(environ[COUNT_ENV])
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ConfigError(f"wbsweep_count must be a positive integer, got {count!r}")
    sweep_id = _sweep_ref(kwargs.get("sweep_id")) or environ.get(SWEEP_ID_ENV) or None
    requested = kwargs.get("wbsweep_backend")
    if requested is None and sweep_id and "/" in str(sweep_id):
        requested = "wandb"  # entity/project/id can only be a W&B sweep
    sweep = SweepOptions(
        method=kwargs.get("method"),
        n_trials=n_trials,
        direction=normalize_goal(direction),
        metric=kwargs.get("metric"),
        name=kwargs.get("name"),
        project=kwargs.get("project"),
    )
    return SearchOptions(
        backend=choose_backend(requested),
        sweep=sweep,
        store=kwargs.get("wbsweep_store"),
        sweep_id=str(sweep_id) if sweep_id else None,
        entity=kwargs.get("entity"),
        count=count,
    )


def sweep_config(hp_space: Any, options: SearchOptions) -> dict[str, Any]:
    """The whole, validated sweep config for a new sweep (the running script is its program)."""
    program = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return build_config(
        hp_space, sweep_file=program, options=options.sweep, command=list(IN_PROCESS_COMMAND)
    )


# ----------------------------------------------------------------------- the search


def run_search(trainer: Any, n_trials: int, direction: Any, **kwargs: Any) -> Any:
    """Run the search on this rank; every rank returns the same ``BestRun``."""
    if getattr(trainer, "model_init", None) is None:
        raise RuntimeError(_MODEL_INIT_REQUIRED)
    if getattr(trainer, "compute_objective", None) is None:
        from transformers.trainer_utils import default_compute_objective

        trainer.compute_objective = default_compute_objective
    ranks = Ranks()
    saved_mode = os.environ.get("WANDB_MODE")
    if not ranks.is_main:
        os.environ["WANDB_MODE"] = "disabled"
    # A scheduler's SIGTERM during training: every rank saves a checkpoint and the
    # run is preempted (the next process that joins the sweep resumes it).
    saved_sigterm = procs.raise_on_sigterm() if _in_main_thread() else None
    try:
        with TrainerSession(trainer, is_main=ranks.is_main) as session:
            if ranks.is_main:
                outcome = _lead(trainer, n_trials, direction, kwargs, session, ranks)
            else:
                _follow(session, ranks)
                outcome = ranks.share(None)
    finally:
        if not ranks.is_main:
            _restore_env("WANDB_MODE", saved_mode)
        if saved_sigterm is not None:
            signal.signal(signal.SIGTERM, saved_sigterm)
    kind, value = outcome
    if kind == "preempted":
        raise SystemExit(EXIT_TERMINATED)  # as a preempted `wbsweep agent` trial leaves
    if kind == "error":
        raise value if isinstance(value, BaseException) else WbsweepError(str(value))
    return value


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _lead(
    trainer: Any,
    n_trials: int,
    direction: Any,
    kwargs: Mapping[str, Any],
    session: TrainerSession,
    ranks: Ranks,
) -> tuple[str, Any]:
    """Rank 0: drive the backend, then end every rank's loop and share the outcome."""
    outcome: tuple[str, Any] = ("error", "rank 0 stopped before the search ended")
    try:
        options = parse_options(n_trials, direction, kwargs)
        best = _drive(trainer, options, session, ranks)
        outcome = ("preempted", None) if best is None else ("best", best)
    except BaseException as exc:
        outcome = ("error", exc)
        raise
    finally:
        ranks.share(("done",))
        shared = outcome if picklable(outcome) else ("error", f"{outcome[1]!r}")
        ranks.share(shared)
    return outcome


def _drive(trainer: Any, options: SearchOptions, session: TrainerSession, ranks: Ranks) -> Any:
    """Rank 0: join or create the sweep, run trials until none is left, return the best."""
    from wbsweep.backends import open_backend
    from wbsweep.best import best_run

    project = options.sweep.project
    backend = open_backend(
        options.backend, store=options.store, entity=options.entity, project=project
    )
    if options.sweep_id:
        sweep_id = backend.resolve(options.sweep_id)
    else:
        sweep_id = backend.create(sweep_config(getattr(trainer, "hp_space", None), options))
    sweep = backend.sweep(sweep_id)  # a clear error when there is no such sweep
    _announce_sweep(sweep.id, backend.location)
    metric, goal = sweep.metric_name, sweep.goal
    preempted: list[str] = []
    hp_name = getattr(trainer, "hp_name", None)  # what hyperparameter_search(hp_name=) set

    def one_trial(claimed: ClaimedRun) -> None:
        def start_every_rank() -> None:
            # Once the W&B run is open: from here on, rank 0 trains too.
            ranks.share(("trial", claimed.run_id, claimed.params, metric, goal))

        try:
            run_trial(
                session,
                claimed.params,
                run_id=claimed.run_id,
                metric=metric,
                goal=goal,
                reporter=claimed.reporter,
                wandb=RunSettings(
                    project=project,
                    entity=options.entity,
                    group=claimed.wandb_group,
                    mode=claimed.wandb_mode,
                ).labelled(_label(backend, sweep.id, claimed.run_id), hp_name, claimed.params),
                is_main=True,
                ready=start_every_rank,
                should_stop=claimed.should_stop,
            )
        except TrialStopped:
            logger.info("wbsweep: trial %s stopped early by the sweep", claimed.run_id)
            raise
        except procs.Terminated:
            preempted.append(claimed.run_id)
            logger.warning(
                "wbsweep: trial %s preempted; it resumes when the sweep is joined again",
                claimed.run_id,
            )
            raise
        except Exception as exc:
            logger.error(
                "wbsweep: trial %s failed: %s: %s", claimed.run_id, type(exc).__name__, exc
            )
            raise  # the run is recorded failed, and the search goes on

    worker = f"{socket.gethostname()}:{os.getpid()}:hf"
    limits = DriveOptions(worker, options.count, MAX_CONSECUTIVE_FAILURES, logger.info)
    backend.drive(sweep.id, one_trial, limits)
    if preempted:
        return None
    return _with_sweep_id(best_run(backend, sweep.id), sweep.id)


def _label(backend: Backend, sweep_id: str, run_id: str) -> RunLabel | None:
    try:
        return backend.run_label(sweep_id, run_id)
    except WbsweepError:  # the run keeps W&B's own name; the trial goes on
        return None


def _follow(session: TrainerSession, ranks: Ranks) -> None:
    """Ranks 1..N-1: train whatever rank 0 announces, until it says done."""
    while True:
        message = ranks.share(None)
        if message[0] != "trial":
            return
        _, run_id, params, metric, goal = message
        try:
            run_trial(
                session, params, run_id=run_id, metric=metric, goal=goal, wandb=None, is_main=False
            )
        except procs.Terminated:
            continue  # checkpointed with rank 0 at the same step; rank 0 says what comes next
        except Exception as exc:  # noqa: BLE001 - rank 0 records the failure
            logger.debug("rank %d: trial %s failed: %s", ranks.rank, run_id, exc)


def _announce_sweep(ref: str, where: str) -> None:
    # Printed, not logged: it is how another process or machine joins this search.
    print(
        f"wbsweep: sweep {ref} ({where}); more processes join it with sweep_id={ref!r} "
        f"or {SWEEP_ID_ENV}={ref}",
        file=sys.stderr,
        flush=True,
    )


def _with_sweep_id(best: Any, sweep_id: str) -> Any:
    """The sweep id as ``run_summary``, as Transformers' own W&B backend returns it.

    Passing it back as ``sweep_id=`` (after a restart) joins the same sweep.
    """
    return best._replace(run_summary=sweep_id)


def _sweep_ref(value: Any) -> str | None:
    """``sweep_id=`` as given: an id, or a ``run_summary`` an earlier call returned."""
    if isinstance(value, Mapping):  # earlier wbsweep releases returned {..., "sweep_id": id}
        value = value.get("sweep_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"sweep_id must be a sweep id string, got {value!r}")
    return value
