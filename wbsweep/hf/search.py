"""``trainer.hyperparameter_search(backend="wandb")`` run by wbsweep, on one rank or N.

Execution model: every rank of an ``accelerate launch`` / ``torchrun`` job
calls ``hyperparameter_search``. Rank 0 alone talks to the sweep's backend
(one sweep, one agent per job); for each trial it broadcasts
``("trial", run_id, params)`` to every rank with
``torch.distributed.broadcast_object_list``, every rank trains that trial with
the same params, and a final ``("done",)`` ends the loop everywhere. Rank 0
then broadcasts the outcome (the ``BestRun``, or the error) so every rank
returns the same value. Only rank 0 ever creates a W&B run; the others run
with ``WANDB_MODE=disabled`` for the duration of the search.

* **local** backend: rank 0 claims runs from the SQLite store
  (``LocalBackend.claim_next``) and records start, result and exit itself; its
  W&B run is offline unless ``WANDB_MODE`` says otherwise.
* **wandb** backend: rank 0 registers the sweep (or joins ``sweep_id``) and runs
  ``wandb.agent(..., function=...)``; in wandb 0.31 that is
  ``wandb.agents.pyagent``, which calls the function in a thread of this
  process, once per run the server hands out, after exporting the run's id so
  that ``wandb.init()`` joins it and ``wandb.config`` holds its params.

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

import functools
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wbsweep.backends import choose_backend
from wbsweep.errors import ConfigError, WbsweepError
from wbsweep.hf.session import TrialSession

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
    """What ``hyperparameter_search``'s arguments ask of wbsweep (resolved, validated)."""

    backend: str
    n_trials: int
    goal: str
    store: str | None = None
    sweep_id: str | None = None
    project: str | None = None
    entity: str | None = None
    name: str | None = None
    metric: str | None = None
    method: str | None = None
    count: int | None = None


def parse_options(
    n_trials: int,
    direction: Any,
    kwargs: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> SearchOptions:
    """Resolve the keyword arguments; unknown ones are an error, not silently dropped.

    >>> parse_options(3, "max", {"wbsweep_backend": "local", "metric": "acc"}).goal
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
    sweep_id = kwargs.get("sweep_id") or environ.get(SWEEP_ID_ENV) or None
    requested = kwargs.get("wbsweep_backend")
    if requested is None and sweep_id and "/" in str(sweep_id):
        requested = "wandb"  # entity/project/id can only be a W&B sweep
    return SearchOptions(
        backend=choose_backend(requested),
        n_trials=n_trials,
        goal=normalize_goal(direction),
        store=kwargs.get("wbsweep_store"),
        sweep_id=str(sweep_id) if sweep_id else None,
        project=kwargs.get("project"),
        entity=kwargs.get("entity"),
        name=kwargs.get("name"),
        metric=kwargs.get("metric"),
        method=kwargs.get("method"),
        count=count,
    )


def sweep_config(hp_space: Any, options: SearchOptions) -> dict[str, Any]:
    """The whole, validated sweep config for a new sweep."""
    from wbsweep.config import build_sweep_config
    from wbsweep.space import translate

    space = translate(hp_space)
    program = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return build_sweep_config(
        space,
        sweep_file=program,
        method=options.method,
        direction=options.goal,
        metric=options.metric,
        n_trials=options.n_trials,
        name=options.name,
        command=list(IN_PROCESS_COMMAND),
    )


# ------------------------------------------------------------------------ ranks


class _Ranks:
    """This process's place in the job, and rank 0's voice to the others."""

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        if "torch.distributed" in sys.modules or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                self.rank, self.world = dist.get_rank(), dist.get_world_size()
            elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise WbsweepError(
                    "WORLD_SIZE > 1 but no torch.distributed process group: build the "
                    "Trainer (it sets the group up) before hyperparameter_search"
                )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, message: Any) -> Any:
        """Rank 0's ``message`` on every rank (others pass ``None``)."""
        if self.world == 1:
            return message
        import torch.distributed as dist

        box = [message if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# ----------------------------------------------------------------------- the search


def run_search(trainer: Any, n_trials: int, direction: Any, **kwargs: Any) -> Any:
    """Run the search on this rank; every rank returns the same ``BestRun``."""
    if getattr(trainer, "model_init", None) is None:
        raise RuntimeError(_MODEL_INIT_REQUIRED)
    if getattr(trainer, "compute_objective", None) is None:
        from transformers.trainer_utils import default_compute_objective

        trainer.compute_objective = default_compute_objective
    ranks = _Ranks()
    saved_mode = os.environ.get("WANDB_MODE")
    if not ranks.is_main:
        os.environ["WANDB_MODE"] = "disabled"
    try:
        with TrialSession(trainer, is_main=ranks.is_main) as session:
            if ranks.is_main:
                outcome = _lead(trainer, n_trials, direction, kwargs, session, ranks)
            else:
                _follow(session, ranks)
                outcome = ranks.share(None)
    finally:
        if not ranks.is_main:
            _restore_env("WANDB_MODE", saved_mode)
    kind, value = outcome
    if kind == "error":
        raise value if isinstance(value, BaseException) else WbsweepError(str(value))
    return value


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
    session: TrialSession,
    ranks: _Ranks,
) -> tuple[str, Any]:
    """Rank 0: drive the backend, then end every rank's loop and share the outcome."""
    outcome: tuple[str, Any] = ("error", "rank 0 stopped before the search ended")
    try:
        options = parse_options(n_trials, direction, kwargs)

        def trial(run_id: str, params: dict[str, Any]) -> None:
            ranks.share(("trial", run_id, params))

        drive = _drive_local if options.backend == "local" else _drive_wandb
        best = drive(trainer, options, session, trial)
        outcome = ("best", best)
    except BaseException as exc:
        outcome = ("error", exc)
        raise
    finally:
        ranks.share(("done",))
        shared = outcome if _picklable(outcome) else ("error", f"{outcome[1]!r}")
        ranks.share(shared)
    return outcome


def _picklable(value: Any) -> bool:
    import pickle

    try:
        # Round trip: some exceptions pickle but cannot be rebuilt on the other side.
        pickle.loads(pickle.dumps(value))
    except Exception:  # noqa: BLE001 - any failure means "send text instead"
        return False
    return True


def _follow(session: TrialSession, ranks: _Ranks) -> None:
    """Ranks 1..N-1: train whatever rank 0 announces, until it says done."""
    while True:
        message = ranks.share(None)
        if message[0] != "trial":
            return
        _, run_id, params = message
        try:
            session.run(run_id, params)
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


def _log_failure(run_id: str, exc: BaseException, *, traceback: bool = True) -> None:
    info = exc if traceback else None
    logger.error("wbsweep: trial %s failed: %s: %s", run_id, type(exc).__name__, exc, exc_info=info)


# --------------------------------------------------------------------- local backend


def _drive_local(
    trainer: Any,
    options: SearchOptions,
    session: TrialSession,
    announce: Callable[[str, dict[str, Any]], None],
) -> Any:
    from wbsweep.backends.local import LocalBackend
    from wbsweep.best import best_run

    backend = LocalBackend(options.store) if options.store else LocalBackend()
    if options.sweep_id:
        sweep_id = options.sweep_id
        backend.sweep(sweep_id)  # a clear error when there is no such sweep
    else:
        sweep_id = backend.create(sweep_config(getattr(trainer, "hp_space", None), options))
    sweep = backend.sweep(sweep_id)
    _announce_sweep(sweep_id, f"local store {backend.path}")
    worker = f"{socket.gethostname()}:{os.getpid()}:hf"
    done = failures = 0
    while options.count is None or done < options.count:
        if failures >= MAX_CONSECUTIVE_FAILURES:
            logger.error("wbsweep: %d trials failed in a row; this process stops", failures)
            break
        run = backend.claim_next(sweep_id, worker)
        if run is None:
            break
        done += 1
        try:
            # Before the announcement: once the other ranks train, rank 0 must too.
            wandb_run = _offline_run(options, sweep, run.id, run.params)
        except Exception as exc:  # noqa: BLE001 - the run failed before it began
            _log_failure(run.id, exc)
            backend.finish_run(run.id, exit_code=1)
            failures += 1
            continue
        announce(run.id, run.params)
        exit_code: int | None = None
        try:
            objective, metrics = session.run(
                run.id, run.params, on_first_step=functools.partial(backend.record_started, run.id)
            )
            backend.record_result(run.id, objective, metrics)
            _log_objective(wandb_run, sweep.metric_name, objective)
            exit_code, failures = 0, 0
        except Exception as exc:  # noqa: BLE001 - one trial's failure is the run's, not the sweep's
            _log_failure(run.id, exc)
            exit_code, failures = 1, failures + 1
        finally:
            if wandb_run is not None:
                wandb_run.finish(exit_code=1 if exit_code is None else exit_code)
            backend.finish_run(run.id, exit_code=exit_code, stopped=exit_code is None)
    backend.maybe_finish_sweep(sweep_id)
    return _with_sweep_id(best_run(backend, sweep_id), sweep_id)


def _offline_run(options: SearchOptions, sweep: Any, run_id: str, params: dict[str, Any]) -> Any:
    """Rank 0's W&B run for a local trial: offline by default, for `wandb sync` later."""
    import wandb

    mode: Any = os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
        return None
    project = options.project or os.environ.get("WANDB_PROJECT") or "wbsweep"
    run = wandb.init(
        project=project,
        entity=options.entity,
        id=run_id,
        group=f"sweep-{sweep.id}",
        config=dict(params),
        mode=mode,
        reinit="finish_previous",
    )
    run.define_metric(sweep.metric_name, summary="min" if sweep.goal == "minimize" else "max")
    return run


def _log_objective(run: Any, metric: str, objective: float) -> None:
    if run is None:
        return
    run.log({metric: objective})
    run.summary[metric] = objective


def _with_sweep_id(best: Any, sweep_id: str) -> Any:
    """Tell the caller which sweep (to join it, or for ``wbsweep best``)."""
    return best._replace(run_summary={**best.run_summary, "sweep_id": sweep_id})


# --------------------------------------------------------------------- W&B backend


def _drive_wandb(
    trainer: Any,
    options: SearchOptions,
    session: TrialSession,
    announce: Callable[[str, dict[str, Any]], None],
) -> Any:
    import wandb

    from wbsweep.backends.wandb import SweepPath, WandbBackend
    from wbsweep.best import best_run

    backend = WandbBackend(entity=options.entity, project=options.project)
    if options.sweep_id and "/" in options.sweep_id:
        path = SweepPath.parse(options.sweep_id)
    elif options.sweep_id:
        project = backend.project or "wbsweep"
        path = SweepPath(str(backend.entity), project, options.sweep_id)
    else:
        config = sweep_config(getattr(trainer, "hp_space", None), options)
        path = SweepPath.parse(backend.create(config))
    sweep = backend.sweep(str(path))
    names = set(sweep.config.get("parameters", {}))
    metric, goal = sweep.metric_name, sweep.goal
    _announce_sweep(str(path), f"W&B at {backend.url}")

    def one_trial() -> None:
        # Runs in pyagent's thread; the agent finishes the run when this returns.
        run = wandb.init()
        params = {k: v for k, v in run.config.as_dict().items() if k in names}
        run.define_metric(metric, summary="min" if goal == "minimize" else "max")
        announce(run.id, params)
        try:
            objective, _ = session.run(run.id, params)
        except Exception as exc:
            _log_failure(run.id, exc, traceback=False)  # the agent prints it
            raise  # the agent marks the run failed and goes on
        _log_objective(run, metric, objective)

    wandb.agent(
        path.id, function=one_trial, entity=path.entity, project=path.project, count=options.count
    )
    return _with_sweep_id(best_run(backend, str(path)), str(path))
