"""Rebuilding Transformers' ``BestRun`` from a sweep's own record.

The choice covers every run any worker on any machine recorded: only runs that
finished with a finite objective compete, ties go to the earlier run, and the
hyperparameters are only the sweep's own parameters that the run used (not
another branch's of a conditional ``hp_space``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from wbsweep.backends import base
from wbsweep.errors import NoBestRunError, UsageError
from wbsweep.states import RunState

if TYPE_CHECKING:
    from transformers.trainer_utils import BestRun


def select_best(runs: Sequence[base.RunRecord], goal: str) -> base.RunRecord:
    """The best finished run with a finite objective.

    >>> runs = [base.RunRecord("a", "s", RunState.FINISHED, {"lr": 1}, objective=0.5),
    ...         base.RunRecord("b", "s", RunState.CRASHED, {"lr": 2}, objective=0.1),
    ...         base.RunRecord("c", "s", RunState.FINISHED, {"lr": 3}, objective=0.3)]
    >>> select_best(runs, "minimize").id
    'c'
    """
    if goal not in ("minimize", "maximize"):
        raise UsageError(f"unknown goal {goal!r}; expected minimize or maximize")
    candidates = [r for r in runs if r.state == RunState.FINISHED and r.has_finite_objective]
    if not candidates:
        raise NoBestRunError(
            f"no finished run with a finite objective yet ({len(runs)} runs in the sweep)"
        )
    sign = 1.0 if goal == "minimize" else -1.0
    # min() keeps the first of equals: the earlier run wins a tie.
    return min(candidates, key=lambda r: sign * float(r.objective))  # type: ignore[arg-type]


def run_summary(run: base.RunRecord, metric: str) -> dict[str, Any]:
    """What a user wants beside the params: metrics, state and timing of the run."""
    summary: dict[str, Any] = dict(run.metrics)
    summary[metric] = run.objective
    summary.update(
        state=run.state,
        exit_code=run.exit_code,
        worker=run.worker,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )
    return summary


def build_best_run(
    sweep: base.SweepRecord, runs: Sequence[base.RunRecord], parameters: Iterable[str] | None = None
) -> BestRun:
    """``BestRun(run_id, objective, hyperparameters, run_summary)`` for a sweep."""
    from transformers.trainer_utils import BestRun

    best = select_best(runs, sweep.goal)
    names = set(parameters if parameters is not None else sweep.config.get("parameters", {}))
    names -= best.unused_params
    hyperparameters = {k: v for k, v in best.params.items() if k in names}
    return BestRun(
        run_id=best.id,
        objective=float(best.objective),  # type: ignore[arg-type]
        hyperparameters=hyperparameters,
        run_summary=run_summary(best, sweep.metric_name),
    )


def best_run(backend: base.Backend, sweep_id: str) -> BestRun:
    """The sweep's ``BestRun``, read from ``backend``: the library form of ``wbsweep best``."""
    sweep = backend.sweep(sweep_id)
    # W&B filters and orders on the server; select_best still decides (and
    # breaks ties), so any backend's candidates give the same answer. With no
    # candidate, every run is read so that the error says how many there are.
    runs = backend.best_candidates(sweep_id) or backend.runs(sweep_id)
    return build_best_run(sweep, runs)
